"""Exact top-k selection over a query's candidates, and the compactness prior on them.

Both serve the propagation kernel (`propagation.py`). They are written for what XLA's CPU backend
does fast: its top-k sorts whole rows with a slow comparator and its argmax is a slow reduction,
while a plain max over the minor axis is a fraction of one pass over the data. So
`top_k_by_rows` takes each row's maximum first and searches only the few rows that can hold the
best, and `compactness_prior` takes the Gaussian of a distance as a product of one Gaussian per
axis, so that a window's prior is an outer product of 2 x span exponentials instead of span^2.
"""

import jax
import jax.numpy as jnp
import numpy as np

# Up to this many, the best are found by argmax passes (one pass each) rather than XLA's top-k,
# which on a CPU sorts every row with a slow comparator: the compactness prior's top-2 of 2 rows
# of a window is ~10x faster so; a top-10 of 10 frame rows is faster sorted.
FEW = 4


def top_k_by_rows(rows: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The k largest entries of rows [..., R, W], taken over the flattened R*W candidates.

    Exact, with ties going to the lower flat index (the order of `jax.lax.top_k` on the flattened
    array): the k largest lie in the k rows with the largest maxima (any row outside them is
    beaten by k rows' maxima), so those rows are found from the row maxima, gathered in their
    original order, and searched whole.

    Args:
      rows: [..., R, W] finite candidates, row after row (e.g. a window's rows, a frame's rows;
        masked affinities are the finite MASKED_LOGIT).
      k: how many to keep; at most R * W.

    Returns:
      (values [..., k] in decreasing order, flat indices into R*W [..., k]).
    """
    num_rows, width = rows.shape[-2:]
    if k > num_rows * width:
        raise ValueError(f"cannot take the top {k} of {num_rows} x {width} candidates")
    k_rows = min(k, num_rows)
    which = jnp.sort(_largest(rows.max(axis=-1), k_rows), axis=-1)  # original order: ties keep index order
    picked = jnp.take_along_axis(rows, which[..., None], axis=-2).reshape(*rows.shape[:-2], k_rows * width)
    if k <= FEW:
        position = _largest(picked, k)
        values = jnp.take_along_axis(picked, position, axis=-1)
    else:
        values, position = jax.lax.top_k(picked, k)
    return values, jnp.take_along_axis(which, position // width, axis=-1) * width + position % width


def compactness_prior(
    best: jax.Array,
    candidate_ref: jax.Array | np.ndarray,
    candidate_y: jax.Array | np.ndarray,
    candidate_x: jax.Array | np.ndarray,
    *,
    window_size: int,
    span: int,
    sigma: float,
) -> jax.Array:
    """The compactness prior of candidates: a Gaussian (sigma in feature pixels) of the distance
    to the nearest of the best matches in the same reference, 0 in a reference without one.

    The nearest match has the largest Gaussian, so the prior is the maximum over the best matches
    of [same reference] * g(dy) * g(dx), with g(d) = exp(-d^2 / (2 sigma^2)).

    Args:
      best: [..., B] the best matches, as flat indices into M * window_size (M references, each
        a span x span window flattened row-major).
      candidate_ref, candidate_y, candidate_x: the candidates' reference, window row and window
        column, each [..., *T]: the leading axes of `best` (or 1s), then the candidates' own
        axes T (e.g. [1, 1, M, 1, 1], [1, 1, 1, S, 1] and [1, 1, 1, 1, S] for every candidate of
        the windows of [nT, Q] queries, or [nT, Q, k] for k chosen candidates of each).
      window_size: span^2, the candidates of one reference.
      span: the window side.
      sigma: the Gaussian's standard deviation.

    Returns:
      [..., *T] the prior of every candidate.
    """
    trailing = np.ndim(candidate_ref) - (best.ndim - 1)  # len(T)
    best_ref, position = best // window_size, best % window_size
    scale = -0.5 / sigma**2
    prior = None
    for b in range(best.shape[-1]):

        def at(x):
            return x[..., b].reshape(x.shape[:-1] + (1,) * trailing)

        gy = jnp.exp(scale * jnp.square(candidate_y - at(position // span)).astype(jnp.float32))
        gx = jnp.exp(scale * jnp.square(candidate_x - at(position % span)).astype(jnp.float32))
        term = jnp.where(candidate_ref == at(best_ref), gy, 0.0) * gx
        prior = term if prior is None else jnp.maximum(prior, term)
    return prior


def _largest(x: jax.Array, k: int) -> jax.Array:
    """Indices [..., k] of the k largest entries of x [..., N], in decreasing order, ties to the
    lower index (as `jax.lax.top_k`), by k argmax passes."""
    index = jnp.arange(x.shape[-1])
    chosen = []
    for _ in range(k):
        best = jnp.argmax(x, axis=-1)
        chosen.append(best)
        x = jnp.where(index == best[..., None], -jnp.inf, x)
    return jnp.stack(chosen, axis=-1)
