"""The propagation kernel against a dense NumPy reference; the frame-by-frame Propagator."""

import dataclasses

import jax
import numpy as np
import pytest

from mer_jax.evaluation import propagation, protocol, vos
from tests import jaxpr_sizes


def dense_propagate(query, keys, labels, valid, preset):
    """Plain NumPy: all (ref, pixel) candidates of every query, explicit masks, softmax."""
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
        ok = in_window[i][None, :] & valid[:, None]
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


def random_case(seed, m=3, h=9, w=11, c=6, num_labels=3):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(h, w, c)).astype(np.float32)
    keys = rng.normal(size=(m, h, w, c)).astype(np.float32)
    labels = rng.dirichlet(np.ones(num_labels), size=(m, h, w)).astype(np.float32)
    valid = np.array([True, False, True][:m])
    return query, keys, labels, valid


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
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_propagate_frame_matches_dense_reference(name):
    preset = PRESETS[name]
    query, keys, labels, valid = random_case(hash(name) % 100)
    got = np.asarray(propagation.propagate_frame(query, keys, labels, valid, preset))
    want = dense_propagate(query, keys, labels, valid, preset)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


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


def test_memory_is_one_row_of_tiles_whatever_the_frame_height():
    """The largest array built anywhere is one tile row's logits, for 2 or 12 rows of tiles."""

    preset = protocol.Preset(radius=3, topk=None, tile=4)
    largest = {}
    for height in (8, 48):
        query, keys, labels, valid = random_case(0, m=3, h=height, w=16, c=4)
        jaxpr = jax.make_jaxpr(lambda *a: propagation.propagate_frame(*a, preset))(query, keys, labels, valid)
        largest[height] = jaxpr_sizes.largest_intermediate(jaxpr.jaxpr)
    row_logits = 4 * 16 * 3 * 10**2  # [nTx, Q, M, K] with nTx = 4, Q = 16, K = (4 + 2 * 3)^2
    assert largest[48] == largest[8] == row_logits
