"""Label propagation against a dense NumPy reference, reference plans, label sampling."""

import dataclasses

import numpy as np
import pytest

from mer_jax.evaluation import propagation


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
        if preset.topk:
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
    "crw_like": propagation.Preset(context="crw", radius=3, window="disk", temperature=0.5, topk=5, tile=4),
    "mer_like": propagation.Preset(
        context="mer",
        radius=2,
        window="square",
        temperature=1.0,
        topk=0,
        normalize=False,
        compactness=True,
        compactness_min_prob=0.05,
        tile=3,
    ),
    "plain": propagation.Preset(radius=4, window="square", temperature=0.3, topk=0, tile=8),
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


def test_crw_reference_plan_is_first_frame_plus_previous_frames():
    preset = propagation.Preset(context="crw", crw_context=3)
    indices, valid = propagation.reference_plan(np.zeros((7, 8, 8, 3), np.uint8), preset)
    assert indices.shape == (7, 4)
    assert list(indices[1][valid[1]]) == [0]
    assert list(indices[2][valid[2]]) == [0, 1]
    assert list(indices[6][valid[6]]) == [0, 3, 4, 5]


def test_mer_reference_plan_picks_long_term_and_most_similar_short_term_frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
    frames = np.stack([np.clip(base.astype(int) + 40 * (i % 4), 0, 255).astype(np.uint8) for i in range(20)])
    preset = propagation.Preset(context="mer", long_term=(0, 5, 10), short_term=3, short_term_search=8)
    indices, valid = propagation.reference_plan(frames, preset)
    assert indices.shape == (20, 6)
    refs = list(indices[16][valid[16]])
    # Frame 16 equals frames 12 and 8 (same i % 4); then the next most similar (+-40) are 15, 13, 11, 9.
    assert refs[:3] == [0, 5, 10]
    assert {8, 12} <= set(refs[3:]) and len(refs) == 6
    assert list(indices[3][valid[3]]) == [0, 1, 2]  # long-term 0, short-term among 2 and 1
    assert all(set(indices[t][valid[t]]) <= set(range(t)) for t in range(1, 20))


def test_labels_at_stride_nearest_samples_and_ignores_void():
    mask = np.zeros((8, 8), np.uint8)
    mask[:4, :4] = 1
    mask[4:, 4:] = 2
    mask[0, 4:] = 255
    labels = propagation.labels_at_stride(mask, [1, 2], 4, 4)
    assert labels.shape == (4, 4, 3)
    np.testing.assert_array_equal(labels.argmax(-1), [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
    np.testing.assert_array_equal(labels.sum(-1), 1.0)


def test_labels_to_mask_upsamples_to_the_frame():
    soft = np.zeros((2, 3, 2), np.float32)
    soft[..., 0] = 1.0
    soft[:, 2] = [0.0, 1.0]  # right column of cells is object 1
    mask = np.asarray(propagation.labels_to_mask(soft, 7, 10, foreground_scale=1.0))
    assert mask.shape == (7, 10)
    # Cell centres are at 4j + 1.5; half-way between cells 1 and 2 lies at x = 7.5.
    np.testing.assert_array_equal(mask[:, :8], 0)
    np.testing.assert_array_equal(mask[:, 8:], 1)
    uniform = np.broadcast_to(np.array([0.55, 0.45], np.float32), (2, 3, 2))
    assert not np.asarray(propagation.labels_to_mask(uniform, 7, 10, foreground_scale=1.0)).any()
    assert np.asarray(propagation.labels_to_mask(uniform, 7, 10, foreground_scale=1.3)).all()


def test_propagator_carries_soft_labels_through_a_static_sequence():
    rng = np.random.default_rng(1)
    features = np.repeat(rng.normal(size=(1, 6, 7, 4)).astype(np.float32), 5, axis=0)
    first = propagation.labels_at_stride(rng.integers(0, 3, size=(6, 7)).astype(np.uint8), [1, 2], 6, 7)
    preset = propagation.Preset(context="crw", radius=2, temperature=0.01, topk=1, crw_context=2, tile=4)
    seeds = {0: (first, np.ones((6, 7), bool))}
    outputs = dict(propagation.Propagator(preset)(features, np.zeros((5, 6, 7, 3), np.uint8), seeds))
    assert sorted(outputs) == [0, 1, 2, 3, 4]
    for soft in outputs.values():  # identical frames, top-1: every pixel copies itself
        np.testing.assert_allclose(np.asarray(soft), first, atol=1e-5)


def test_segment_video_follows_a_translating_pattern_and_adds_late_objects():
    """A random texture moving 4 px right per frame; raw pixels as features track it exactly."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(32, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(texture, 4 * t, axis=1) for t in range(6)])
    first = np.zeros((32, 64), np.uint8)
    first[8:24, 16:32] = 1
    late = np.zeros((32, 64), np.uint8)
    late[0:8, 40:56] = 2  # object 2 appears at frame 3
    encoder = lambda f, flow=None: np.asarray(f, np.float32)[:, 1::4, 1::4] / 255.0  # noqa: E731
    preset = propagation.Preset(
        context="crw", radius=3, temperature=0.001, topk=1, normalize=True, crw_context=1, tile=4
    )
    masks = dict(
        propagation.segment_video(encoder, propagation.Propagator(preset), frames, {0: first, 3: late}, [1, 2])
    )
    assert sorted(masks) == list(range(6))
    for t in range(6):
        want = np.roll(first, 4 * t, axis=1)
        if t >= 3:
            want = np.where(np.roll(late, 4 * (t - 3), axis=1) == 2, 2, want)
        assert (masks[t] == want).mean() > 0.97, t
    assert (masks[2] == 2).sum() == 0 and (masks[4] == 2).sum() > 100


def test_bad_preset_values_are_rejected():
    with pytest.raises(ValueError, match="context"):
        propagation.Preset(context="stm")
    with pytest.raises(ValueError, match="window"):
        propagation.Preset(window="circle")
