"""Module diagnostics: the exact AUC, the sampler and weight-map scalars and the feature collapse
against NumPy, the probe against the generator, the held-out errors and positive mass of a debug
model against a NumPy reconstruction, and the keys of every module set."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import demo
from mer_jax import color, diagnostic_images, diagnostics, objective, sampler, sharding, train_state
from mer_jax.data import synthetic_video

SWITCHES = ("use_flow", "use_ven", "use_sampler", "use_weight_map", "use_pos_neg")
MODULE_PARAMS = {"use_flow": "flow_fusion", "use_ven": "ven"}  # Parameters of switched modules.
ALWAYS = {"feature_collapse", "heldout_recon_encoder", "heldout_recon_copy"}
ALL_KEYS = ALWAYS | {
    "flow_alpha",
    "value_map_auc",
    "heldout_recon_ven",
    "ven_addition_ratio",
    "sampler_object_coverage",
    "sampler_background_coverage",
    "sampler_radius_object",
    "sampler_radius_background",
    "weight_map_ratio",
    "pn_positive_mass",
}


def config_with(*switched_on):
    config = demo.get_config("debug")  # As tests/test_train.py's debug_config: compilations are shared.
    for name in SWITCHES:
        config.model[name] = name in switched_on
    return config


def auc_by_pairs(scores, positive):
    """The definition: the share of (positive, negative) pairs the positive wins, ties half."""
    pos, neg = scores[positive][:, None], scores[~positive][None, :]
    return np.mean((pos > neg) + 0.5 * (pos == neg))


@pytest.mark.parametrize("jit", [False, True])
def test_roc_auc_is_exact_with_ties(jit):
    auc = jax.jit(diagnostics.roc_auc) if jit else diagnostics.roc_auc
    # Hand-computed: 3 of the 4 pairs ordered right.
    assert float(auc(jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([False, False, True, True]))) == 0.75
    # Ties: positives (0.5, 0.5) against negatives (0.5, 0.2): 0.5 + 1 for each positive, of 4 pairs.
    assert float(auc(jnp.array([0.5, 0.5, 0.5, 0.2]), jnp.array([True, True, False, False]))) == 0.75
    assert float(auc(jnp.full((3, 4), 0.3), jnp.arange(12).reshape(3, 4) % 3 == 0)) == 0.5
    assert np.isnan(float(auc(jnp.array([0.1, 0.2]), jnp.array([True, True]))))
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 7, (4, 9, 9)) / 6.0  # Heavy ties, as the value map's constant windows.
    positive = rng.uniform(size=scores.shape) < 0.3
    want = auc_by_pairs(scores, positive)
    u_statistic = stats.mannwhitneyu(scores[positive], scores[~positive]).statistic
    np.testing.assert_allclose(want, u_statistic / (positive.sum() * (~positive).sum()), rtol=1e-12)
    np.testing.assert_allclose(float(auc(jnp.asarray(scores), jnp.asarray(positive))), want, rtol=1e-6)


def test_sampler_scalars_and_object_ratio_on_a_hand_made_case():
    regions = np.array([[[0, 0, -1], [1, -1, -1], [1, 2, 2]]], np.int32)
    radius = np.where(regions >= 0, 2, 5).astype(np.int32)
    objects = np.array([[[True, True, False], [True, True, False], [False, False, True]]])
    sampled = sampler.SamplerOutput(jnp.asarray(radius), jnp.zeros(1), jnp.asarray(regions))
    got = {k: float(v) for k, v in diagnostics.sampler_scalars(sampled, jnp.asarray(objects)).items()}
    # Objects: (0,0), (0,1), (1,0) inside, (1,1) outside, (2,2) inside; background: (2,0), (2,1) of
    # (0,2), (1,2), (2,0), (2,1) inside.
    assert got == pytest.approx(
        {
            "sampler_object_coverage": 4 / 5,
            "sampler_background_coverage": 2 / 4,
            "sampler_radius_object": (4 * 2 + 5) / 5,
            "sampler_radius_background": (2 * 2 + 2 * 5) / 4,
        },
        rel=1e-6,
    )
    weights = np.arange(9, dtype=np.float32).reshape(1, 3, 3) / 8
    want = weights[objects].mean() / weights[~objects].mean()
    assert want == pytest.approx((16 / 5) / (20 / 4))  # Objects 0+1+3+4+8, background 2+5+6+7 (eighths).
    assert float(diagnostics.object_ratio(jnp.asarray(weights), jnp.asarray(objects))) == pytest.approx(want, rel=1e-6)


def test_feature_collapse_matches_numpy():
    features = np.random.default_rng(1).normal(size=(2, 3, 4, 5, 6)).astype(np.float32)
    mean = features.mean(axis=(2, 3), keepdims=True)
    cosine = np.sum(features * mean, -1) / (np.linalg.norm(features, axis=-1) * np.linalg.norm(mean, axis=-1))
    np.testing.assert_allclose(float(diagnostics.feature_collapse(jnp.asarray(features))), cosine.mean(), rtol=1e-5)
    scaled = np.abs(features[..., :1]) * np.ones(6, np.float32)  # One direction everywhere: collapse.
    np.testing.assert_allclose(float(diagnostics.feature_collapse(jnp.asarray(scaled))), 1.0, rtol=1e-6)


def test_probe_is_held_out_clips_drawn_like_training():
    config = config_with()
    probe = diagnostics.make_probe(config)
    again = diagnostics.make_probe(config)
    jax.tree.map(np.testing.assert_array_equal, probe, again)
    size, clips = config.data.image_size, config.diagnostics.probe_clips
    assert probe.frames.shape == (clips, config.data.num_refs + 1, size, size, 3)
    videos = synthetic_video.generate_videos(
        config.diagnostics.probe_seed, clips, num_frames=config.data.synthetic.num_frames, height=size, width=size,
        num_objects=config.data.synthetic.num_objects, flow_gap=config.data.flow_gap, kind=config.data.synthetic.kind,
    )  # fmt: skip
    for i, video in enumerate(videos):
        index = [int(np.flatnonzero((video.frames == frame).all(axis=(1, 2, 3)))[0]) for frame in probe.frames[i]]
        assert set(np.diff(index)) <= set(config.data.frame_gaps)
        np.testing.assert_array_equal(probe.flow[i], video.flow[index])
        np.testing.assert_array_equal(probe.object_ids[i], video.masks[index[-1]])
        np.testing.assert_array_equal(probe.object_pixels[i], video.masks[index[-1]] > 0)
        # Nearest sampling at stride 4: cell (i, j) takes pixel (4 i, 4 j).
        np.testing.assert_array_equal(probe.object_cells[i], video.masks[index[-1]][::4, ::4] > 0)
        ids = np.argmax(probe.ref_labels[i], axis=-1)  # One-hot: channel k is object k.
        np.testing.assert_array_equal(ids, video.masks[index[:-1]][:, ::4, ::4])
        assert probe.ref_labels[i].sum(axis=-1).min() == 1.0
    assert 0 < probe.object_cells.mean() < 1
    config.diagnostics.probe_seed = config.seed
    with pytest.raises(ValueError, match="must differ from config.seed"):
        diagnostics.make_probe(config)


@pytest.fixture(scope="module")
def initial_state():
    """The all-on debug model's initial train state, initialised as train.py does (one compilation,
    shared with tests/test_train.py through the compilation cache)."""
    config = config_with(*SWITCHES)
    _, init_fn, _ = train_state.make_initializer(config, config.num_train_steps)
    return jax.jit(init_fn, out_shardings=sharding.replicated(sharding.make_mesh()))()


def diagnose(config, state):
    """(`Prober` of config, `state` with the parameters of the modules switched off dropped and no
    bank without pos/neg, the model, host copies of its variables)."""
    model = train_state.build_model(config)
    used = {"encoder"} | {name for switch, name in MODULE_PARAMS.items() if config.model[switch]}
    params = {name: tree for name, tree in state.params.items() if name in used}
    if not config.model.use_flow:  # The stem without the two flow channels ('channels' encoding).
        stem = params["encoder"]["Conv_0"]
        params["encoder"] = {**params["encoder"], "Conv_0": {**stem, "kernel": stem["kernel"][:, :, :3]}}
    state = state.replace(
        params=params,
        memory_bank=state.memory_bank if config.model.use_pos_neg else None,
    )
    prober = diagnostics.Prober(objective.from_config(config, model, config.num_train_steps), config)
    variables = jax.tree.map(np.asarray, {"params": state.params, "batch_stats": state.batch_stats})
    return prober, state, model, variables


def upsample(x, height, width):
    """Bilinear upsampling [P, h, w, C] -> [P, H, W, C], half-pixel centres, edges held."""

    def taps(size, source):
        position = np.clip((np.arange(size) + 0.5) * source / size - 0.5, 0, source - 1)
        low = np.floor(position).astype(int)
        return low, np.minimum(low + 1, source - 1), (position - low)

    (r0, r1, fy), (c0, c1, fx) = taps(height, x.shape[1]), taps(width, x.shape[2])
    rows = x[:, r0] * (1 - fy)[None, :, None, None] + x[:, r1] * fy[None, :, None, None]
    return rows[:, :, c0] * (1 - fx)[None, None, :, None] + rows[:, :, c1] * fx[None, None, :, None]


def smooth_l1(x):
    return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)


def test_heldout_errors_and_positive_mass_match_numpy(initial_state):
    """pos/neg only (no sampler, no VEN): the encoder's query, windows of radius
    model.reconstruction.radius, and a bank whose one filled entry n is every negative."""
    config = config_with("use_pos_neg")
    prober, state, model, variables = diagnose(config, initial_state)
    probe = prober.probe
    clean = color.uint8_rgb_to_normalized_lab(probe.frames, config.data.lab_mean, config.data.lab_std)
    features = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False).features)(variables, clean), np.float64)
    # n: the targets' mean feature, close to many queries, so the negatives take a visible share.
    negative = features[:, -1].mean(axis=(0, 1, 2))
    empty = state.memory_bank
    bank = empty.replace(
        keys=empty.keys.at[3].set(negative.astype(np.float32)),
        filled=empty.filled.at[3].set(True),
        video_ids=empty.video_ids.at[3].set(5),
    )
    got, picture = prober(state.replace(memory_bank=bank), 0)
    assert set(got) == ALWAYS | {"pn_positive_mass"}
    # Target, objects, propagated objects and flow only: no value map, weight map or sampler here.
    k, height, width = prober.image_clips, *probe.frames.shape[2:4]
    assert picture.shape == (k * height, 4 * width, 3) and picture.dtype == np.uint8
    np.testing.assert_array_equal(picture[height : 2 * height, :width], probe.frames[1, -1])

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    clean = np.asarray(clean, np.float64)
    p, n, height, width, _ = clean.shape
    h, w = height // 4, width // 4
    colours = clean[:, :-1].reshape(p, n - 1, h, 4, w, 4, 3).mean(axis=(3, 5))
    radius, scale = config.model.reconstruction.radius, config.loss.loss_scale
    recon, positive_mass = np.zeros((p, h, w, 3)), np.zeros((p, h, w))
    labels = np.asarray(probe.ref_labels, np.float64)
    propagated = np.zeros((p, h, w, labels.shape[-1]))
    for b, y, x in np.ndindex(p, h, w):
        rows, cols = slice(max(y - radius, 0), y + radius + 1), slice(max(x - radius, 0), x + radius + 1)
        keys = features[b, :-1, rows, cols].reshape(-1, features.shape[-1])  # Both references' windows.
        values = colours[b, :, rows, cols].reshape(-1, 3)
        query = features[b, -1, y, x]
        logits = keys @ query / config.model.reconstruction.temperature
        weights = np.exp(logits - logits.max())
        recon[b, y, x] = weights @ values / weights.sum()
        propagated[b, y, x] = weights @ labels[b, :, rows, cols].reshape(-1, labels.shape[-1]) / weights.sum()
        positive = np.exp(unit(keys) @ unit(query) / config.loss.pn_temperature).sum()
        # num_negatives draws of the one filled entry.
        negatives = config.memory.num_negatives * np.exp(unit(negative) @ unit(query) / config.loss.pn_temperature)
        positive_mass[b, y, x] = positive / (positive + negatives)
    assert positive_mass.mean() < 0.99  # The negatives count: the check below can fail.

    def error(prediction):
        return smooth_l1(scale * (upsample(prediction, height, width) - clean[:, -1])).mean()

    np.testing.assert_allclose(got["heldout_recon_encoder"], error(recon), rtol=2e-4)
    np.testing.assert_allclose(got["heldout_recon_copy"], error(colours[:, 0]), rtol=2e-4)
    np.testing.assert_allclose(got["pn_positive_mass"], positive_mass.mean(), rtol=2e-4)
    # The propagated objects: the most probable label of each cell, drawn over the target.
    top = np.sort(propagated, axis=-1)
    assert (top[..., -1] - top[..., -2] > 1e-3).all()  # No near-ties: the argmax is well defined.
    assert 0 < (propagated.argmax(-1) > 0).mean() < 1  # Objects and background both propagated.
    for clip in range(k):
        ids = propagated[clip].argmax(-1).astype(np.uint8).repeat(4, axis=0).repeat(4, axis=1)
        expected = diagnostic_images.overlay(probe.frames[clip, -1], ids)
        np.testing.assert_array_equal(picture[clip * height : (clip + 1) * height, 2 * width : 3 * width], expected)
    assert got["heldout_recon_encoder"] != pytest.approx(got["heldout_recon_copy"], rel=1e-3)


@pytest.mark.parametrize("switched_on", [(), SWITCHES], ids=["all_off", "all_on"])
def test_debug_model_has_exactly_its_modules_keys(switched_on, initial_state):
    config = config_with(*switched_on)
    prober, state, _, _ = diagnose(config, initial_state)
    got, picture = prober(state, 0)
    assert set(got) == (ALL_KEYS if switched_on else ALWAYS)
    columns = 7 if switched_on else 4  # The value map, weight map and sampler regions with the modules.
    assert picture.shape[1] == columns * prober.probe.frames.shape[3]
    assert all(np.isfinite(v) for v in got.values()), got
    assert 0 < got["feature_collapse"] <= 1 and got["heldout_recon_copy"] > 0
    if switched_on:
        assert got["flow_alpha"] == pytest.approx(config.model.flow.alpha_init)
        assert got["ven_addition_ratio"] == 0.0  # A zero-initialised VEN is the identity.
        assert got["pn_positive_mass"] == pytest.approx(1.0)  # An empty bank: only positives.
        assert 0 <= got["value_map_auc"] <= 1 and got["weight_map_ratio"] > 0
        for part in ("object", "background"):
            assert 0 <= got[f"sampler_{part}_coverage"] <= 1
            assert config.model.sampler.radius_min <= got[f"sampler_radius_{part}"] <= config.model.sampler.radius_max


def test_write_json_replaces_the_file(tmp_path):
    diagnostics.write_json(str(tmp_path), 2, {"a": np.float32(0.5)})
    diagnostics.write_json(str(tmp_path), 4, {"a": 0.25, "b": 1.0})
    assert json.loads((tmp_path / "diagnostics.json").read_text()) == {"step": 4, "a": 0.25, "b": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["diagnostics.json"]


def test_addition_ratio_hand_case():
    features = np.zeros((1, 1, 2, 2), np.float32)
    features[0, 0, 0] = [3.0, 4.0]  # |f| = 5
    features[0, 0, 1] = [1.0, 0.0]  # |f| = 1
    refined = features + np.array([[[[0.0, 1.0], [2.0, 0.0]]]], np.float32)  # additions of norm 1 and 2
    assert float(diagnostics.addition_ratio(refined, features)) == pytest.approx((1 / 5 + 2 / 1) / 2)
