"""Exact top-k by rows and the compactness prior, against plain NumPy."""

import jax
import numpy as np
import pytest

from mer_jax.evaluation import candidates


def numpy_top_k(x, k):
    """The k largest of x [..., N]: decreasing values, ties to the lower index (stable sort)."""
    order = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(x, order, axis=-1), order


@pytest.mark.parametrize("rows,width,k", [(6, 7, 1), (6, 7, 3), (6, 7, 6), (3, 5, 4), (2, 3, 6), (9, 4, 10)])
def test_top_k_by_rows_matches_a_stable_sort_with_many_ties(rows, width, k):
    """Small integers, so that most maxima are tied across rows and within rows; k beyond the
    number of rows and k equal to every candidate included."""
    x = np.random.default_rng(rows * width + k).integers(0, 4, size=(5, 3, rows, width)).astype(np.float32)
    values, index = jax.jit(candidates.top_k_by_rows, static_argnums=1)(x, k)
    want_values, want_index = numpy_top_k(x.reshape(5, 3, rows * width), k)
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(index, want_index)


def test_top_k_by_rows_refuses_more_than_there_are():
    with pytest.raises(ValueError, match="top 7 of 2 x 3"):
        candidates.top_k_by_rows(np.zeros((2, 3), np.float32), 7)


def numpy_prior(best, cand_ref, cand_y, cand_x, window_size, span, sigma):
    """exp(-d^2 / 2 sigma^2) of the squared distance to the nearest best match in the same
    reference (0 without one), candidate by candidate."""
    out = np.zeros(np.broadcast(cand_ref, cand_y, cand_x).shape)
    for b in best:
        ref, pos = divmod(int(b), window_size)
        d2 = (cand_y - pos // span) ** 2 + (cand_x - pos % span) ** 2
        out = np.maximum(out, np.where(cand_ref == ref, np.exp(-d2 / (2 * sigma**2)), 0.0))
    return out


def test_compactness_prior_of_every_window_candidate_and_of_chosen_ones():
    """Two queries with 3 best matches each over 4 references of 5 x 5 windows: the prior of every
    candidate (the windows' layout), and of 6 chosen candidates per query."""
    span, num_refs, sigma = 5, 4, 1.3
    window_size = span * span
    rng = np.random.default_rng(0)
    best = rng.integers(0, num_refs * window_size, size=(1, 2, 3)).astype(np.int32)
    best[0, 1, 2] = best[0, 1, 0] + 1  # two matches in one reference, side by side
    grid = np.arange(num_refs * window_size)
    ref, pos = grid // window_size, grid % window_size
    got = candidates.compactness_prior(
        best,
        np.arange(num_refs).reshape(1, 1, num_refs, 1, 1),
        np.arange(span).reshape(1, 1, 1, span, 1),
        np.arange(span).reshape(1, 1, 1, 1, span),
        window_size=window_size,
        span=span,
        sigma=sigma,
    )
    got = np.asarray(got)
    assert got.shape == (1, 2, num_refs, span, span)
    for q in range(2):
        want = numpy_prior(best[0, q], ref, pos // span, pos % span, window_size, span, sigma)
        np.testing.assert_allclose(got[0, q].ravel(), want, rtol=1e-6, atol=1e-30)
    chosen = rng.integers(0, num_refs * window_size, size=(1, 2, 6))
    got = candidates.compactness_prior(
        best,
        chosen // window_size,
        chosen % window_size // span,
        chosen % span,
        window_size=window_size,
        span=span,
        sigma=sigma,
    )
    for q in range(2):
        c = chosen[0, q]
        want = numpy_prior(best[0, q], c // window_size, c % window_size // span, c % span, window_size, span, sigma)
        np.testing.assert_allclose(np.asarray(got)[0, q], want, rtol=1e-6, atol=1e-30)
