"""The propagation kernel against a dense NumPy reference; the frame-by-frame Propagator."""

import dataclasses

import jax
import numpy as np
import pytest

from mer_jax.evaluation import propagation, protocol, vos
from tests import jaxpr_sizes


def dense_propagate(query, keys, labels, valid, preset):
    """Plain NumPy: all (ref, pixel) candidates of every query, explicit masks, softmax. Reference
    0 is the first frame: with `first_frame_window=False` all its pixels are candidates."""
    h, w, c = query.shape
    m = keys.shape[0]
    q = query.reshape(h * w, c).astype(np.float64)
    k = keys.reshape(m, h * w, c).astype(np.float64)
    if preset.normalize:
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], -1)
    diff = pos[:, None, :] - pos[None, :, :]
    if preset.window == "square":
        in_window = np.abs(diff).max(-1) <= preset.radius
    else:
        in_window = np.sqrt((diff**2).sum(-1)) < preset.radius
    out = np.zeros((h * w, labels.shape[-1]))
    for i in range(h * w):
        logits = (k @ q[i]) / preset.temperature  # [M, HW]
        ok = np.repeat(in_window[i][None, :], m, axis=0)
        if not preset.first_frame_window:
            ok[0] = True
        ok &= valid[:, None]
        logits = np.where(ok, logits, -np.inf).ravel()
        if preset.topk is not None:
            logits = np.where(logits >= np.sort(logits)[-preset.topk], logits, -np.inf)
        wts = np.exp(logits - logits.max())
        wts /= wts.sum()
        if preset.compactness and wts.max() > preset.compactness_min_prob:
            best = np.argsort(-logits, kind="stable")[: preset.compactness_topk]
            ref, pix = np.divmod(np.arange(m * h * w), h * w)
            gauss = np.zeros(m * h * w)
            for b in best:
                d2 = ((pos[pix] - pos[b % (h * w)]) ** 2).sum(-1)
                gauss = np.maximum(
                    gauss, np.where(ref == b // (h * w), np.exp(-d2 / (2 * preset.compactness_sigma**2)), 0)
                )
            wts = wts * gauss
            wts /= wts.sum()
        out[i] = wts @ labels.reshape(m * h * w, -1)
    return out.reshape(h, w, -1)


def random_case(seed, m=3, h=9, w=11, c=6, num_labels=3, valid=(True, False, True)):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(h, w, c)).astype(np.float32)
    keys = rng.normal(size=(m, h, w, c)).astype(np.float32)
    labels = rng.dirichlet(np.ones(num_labels), size=(m, h, w)).astype(np.float32)
    return query, keys, labels, np.array(valid[:m])


PRESETS = {
    "crw_like": protocol.Preset(context="crw", radius=3, window="disk", temperature=0.5, topk=5, tile=4),
    "mer_like": protocol.Preset(
        context="mer",
        radius=2,
        window="square",
        temperature=1.0,
        topk=None,
        normalize=False,
        compactness=True,
        compactness_min_prob=0.05,
        tile=3,
    ),
    "plain": protocol.Preset(radius=4, window="square", temperature=0.3, topk=None, tile=8),
    # Top-k and the compactness prior together: the prior's best matches are the top-k's first.
    "topk_compact": protocol.Preset(
        context="mer",
        radius=2,
        temperature=0.5,
        topk=6,
        normalize=False,
        compactness=True,
        compactness_min_prob=0.05,
        tile=2,
    ),  # fmt: skip
}


@pytest.mark.parametrize("tiles_per_step", [None, 1, 3])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_propagate_frame_matches_dense_reference(name, tiles_per_step):
    """Whatever the number of tiles per step (3 leaves a partial step at the end of each row of
    tiles for every preset's tile)."""
    preset = PRESETS[name]
    query, keys, labels, valid = random_case(sorted(PRESETS).index(name))
    got = np.asarray(propagation.propagate_frame(query, keys, labels, valid, preset, tiles_per_step=tiles_per_step))
    want = dense_propagate(query, keys, labels, valid, preset)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["crw_like", "topk_compact"])
def test_top_k_keeps_every_candidate_tied_with_the_kth(name):
    """Features drawn from 3 vectors: affinities tie everywhere, and the top-k boundary falls
    inside a tie. Every tied candidate is kept, as the dense reference keeps it; keeping exactly k
    (CRW's own code) changed DAVIS J&F by 6e-4 on real Lab features."""
    preset = PRESETS[name]
    query, keys, labels, valid = random_case(13, valid=(True, True, True))
    palette = np.random.default_rng(5).normal(size=(3, query.shape[-1])).astype(np.float32)
    rng = np.random.default_rng(6)
    query, keys = palette[rng.integers(0, 3, query.shape[:-1])], palette[rng.integers(0, 3, keys.shape[:-1])]
    got = np.asarray(propagation.propagate_frame(query, keys, labels, valid, preset))
    want = dense_propagate(query, keys, labels, valid, preset)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("first_frame_window", [True, False])
@pytest.mark.parametrize("valid", [(True, False, True), (False, True, True)], ids=["ref1_invalid", "first_invalid"])
@pytest.mark.parametrize("name", ["crw_like", "plain"])
def test_first_frame_rule_matches_dense_reference(name, valid, first_frame_window):
    # crw_like: disk, top-5, tile 4 (9 x 11 grid: partial tiles); plain: square, no top-k, tile 8.
    preset = dataclasses.replace(PRESETS[name], first_frame_window=first_frame_window)
    query, keys, labels, valid = random_case(7, valid=valid)
    keys[0] *= 3  # Sharper first-frame affinities, so that far first-frame matches carry weight.
    got = np.asarray(propagation.propagate_frame(query, keys, labels, valid, preset))
    want = dense_propagate(query, keys, labels, valid, preset)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_unrestricted_first_frame_reaches_a_cell_far_outside_the_radius():
    """1 x 12 grid, radius 2: the query at x = 0 has feature e0, found in the first frame only at
    x = 11; every other feature is e1. Logits are <., .> / 0.1: 10 for the far cell, 0 for the
    rest. Unrestricted: 12 first-frame cells + 3 windowed cells (x = 0..2) of reference 1, so the
    far cell (label 1) weighs e^10 / (e^10 + 14). Windowed: only cells x = 0..2 of both references,
    all at logit 0 and label 0."""
    e0, e1 = np.eye(2, dtype=np.float32)
    query = np.tile(e1, (1, 12, 1))
    query[0, 0] = e0
    keys = np.tile(e1, (2, 1, 12, 1))
    keys[0, 0, 11] = e0
    labels = np.zeros((2, 1, 12, 2), np.float32)
    labels[..., 0] = 1
    labels[0, 0, 11] = (0, 1)
    valid = np.array([True, True])
    outputs = {}
    for first_frame_window in (True, False):
        preset = protocol.Preset(
            radius=2, first_frame_window=first_frame_window, temperature=0.1, topk=None, normalize=False, tile=4
        )
        outputs[first_frame_window] = np.asarray(propagation.propagate_frame(query, keys, labels, valid, preset))
    far_weight = np.exp(10) / (np.exp(10) + 14)
    np.testing.assert_allclose(outputs[False][0, 0], [1 - far_weight, far_weight], rtol=1e-5)
    np.testing.assert_allclose(outputs[True][0, 0], [1, 0], atol=1e-6)


@pytest.mark.parametrize("first_frame_window", [True, False])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_padding_marked_outside_the_grid_changes_no_real_cell(name, first_frame_window):
    """Maps padded to a bucket with random values (not zeros, so that only the mask can hide them)
    give the dense reference's labels on the real 9 x 11 cells."""
    preset = PRESETS[name]
    if not first_frame_window:
        if preset.compactness:
            pytest.skip("compactness needs first_frame_window=True")
        preset = dataclasses.replace(preset, first_frame_window=False)
    query, keys, labels, valid = random_case(11)
    rng = np.random.default_rng(3)
    pad = [(0, 5), (0, 3)]
    padded_query = np.pad(query, [*pad, (0, 0)])
    padded_query[9:] = padded_query[:, 11:] = 0
    padded_keys = rng.normal(size=(3, 14, 14, 6)).astype(np.float32) * 5
    padded_keys[:, :9, :11] = keys
    padded_labels = rng.dirichlet(np.ones(3), size=(3, 14, 14)).astype(np.float32)
    padded_labels[:, :9, :11] = labels
    cells = np.pad(np.ones((9, 11), bool), pad)
    got = propagation.propagate_frame(padded_query, padded_keys, padded_labels, valid, preset, cells)
    want = dense_propagate(query, keys, labels, valid, preset)
    np.testing.assert_allclose(np.asarray(got)[:9, :11], want, rtol=1e-4, atol=1e-5)


def translating_features(num_frames, h, w, seed=0):
    """Features of a random texture moving one cell right per frame, and its first frame's labels."""
    rng = np.random.default_rng(seed)
    texture = rng.normal(size=(h, w + num_frames, 4)).astype(np.float32)
    features = np.stack([texture[:, num_frames - t : num_frames - t + w] for t in range(num_frames)])
    first = vos.labels_at_stride(rng.integers(0, 3, size=(h, w)).astype(np.uint8), [1, 2], h, w)
    return features, first


def test_one_compilation_serves_videos_of_a_bucket_and_outputs_match_without_lag():
    """Videos of 5 and 9 frames on 6 x 7 and 6 x 5 grids share the step compiled for the bucket
    (16 frames, 8 x 8 cells); handing outputs out 3 frames late changes none of them."""
    preset = protocol.Preset(context="crw", radius=2, temperature=0.05, topk=3, crw_context=2, tile=4)
    lagged = propagation.Propagator(preset, frame_bucket=16, cell_bucket=8, lag=3)
    immediate = propagation.Propagator(preset, lag=0)
    for num_frames, width in ((5, 7), (9, 5)):
        features, first = translating_features(num_frames, 6, width)
        frames = np.zeros((num_frames, 24, 4 * width, 3), np.uint8)
        seeds = {0: (first, np.ones(first.shape[:2], bool))}
        got = list(lagged(features, frames, seeds))
        want = list(immediate(features, frames, seeds))
        assert [t for t, _ in got] == list(range(num_frames))
        for (_, a), (_, b) in zip(got, want):
            assert a.shape == (6, width, 3)
            np.testing.assert_array_equal(a, b)
    assert lagged._step._cache_size() == 1


def test_compactness_gate_leaves_flat_weights_alone():
    # With a threshold above every weight the prior must not change anything.
    preset = dataclasses.replace(PRESETS["mer_like"], compactness_min_prob=1.0)
    query, keys, labels, valid = random_case(5)
    with_gate = np.asarray(propagation.propagate_frame(query, keys, labels, valid, preset))
    without = np.asarray(
        propagation.propagate_frame(query, keys, labels, valid, dataclasses.replace(preset, compactness=False))
    )
    np.testing.assert_allclose(with_gate, without, atol=1e-6)


def test_propagator_carries_soft_labels_through_a_static_sequence():
    rng = np.random.default_rng(1)
    features = np.repeat(rng.normal(size=(1, 6, 7, 4)).astype(np.float32), 5, axis=0)
    first = vos.labels_at_stride(rng.integers(0, 3, size=(6, 7)).astype(np.uint8), [1, 2], 6, 7)
    preset = protocol.Preset(context="crw", radius=2, temperature=0.01, topk=1, crw_context=2, tile=4)
    seeds = {0: (first, np.ones((6, 7), bool))}
    outputs = dict(propagation.Propagator(preset)(features, np.zeros((5, 6, 7, 3), np.uint8), seeds))
    assert sorted(outputs) == [0, 1, 2, 3, 4]
    for soft in outputs.values():  # identical frames, top-1: every pixel copies itself
        np.testing.assert_allclose(np.asarray(soft), first, atol=1e-5)


@pytest.mark.parametrize("tiles_per_step", [2, 4])
def test_memory_is_one_step_of_tiles_whatever_the_frame_height(tiles_per_step):
    """The largest array built anywhere is one step's logits, for 2 or 12 rows of 4 tiles (2
    features and 1 label, so that the padded input maps stay smaller)."""
    preset = protocol.Preset(radius=3, topk=None, tile=4)
    largest = set()
    for height in (8, 48):
        query, keys, labels, valid = random_case(0, m=3, h=height, w=16, c=2, num_labels=1)
        jaxpr = jax.make_jaxpr(lambda *a: propagation.propagate_frame(*a, preset, tiles_per_step=tiles_per_step))(
            query, keys, labels, valid
        )
        largest.add(jaxpr_sizes.largest_intermediate(jaxpr.jaxpr))
    step_logits = tiles_per_step * 16 * 3 * 10**2  # [n, Q, M, K] with Q = 16, K = (4 + 2 * 3)^2
    assert largest == {step_logits}


@pytest.mark.parametrize("height", [8, 48])
def test_memory_with_an_unrestricted_first_frame_is_one_step_of_tiles(height):
    """The largest array is one step's logits: to the whole first frame or to M - 1 windows."""
    preset = protocol.Preset(radius=3, first_frame_window=False, topk=4, tile=4)
    query, keys, labels, valid = random_case(0, m=3, h=height, w=16, c=4)
    jaxpr = jax.make_jaxpr(lambda *a: propagation.propagate_frame(*a, preset, tiles_per_step=2))(
        query, keys, labels, valid
    )
    first_frame, windows = 2 * 16 * height * 16, 2 * 16 * 2 * 10**2  # [n, Q, h*w], [n, Q, M - 1, K]
    assert jaxpr_sizes.largest_intermediate(jaxpr.jaxpr) == max(first_frame, windows)
