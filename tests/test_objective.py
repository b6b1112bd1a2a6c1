"""The training objective: each stage's wiring against a separate computation, every switch
combination, and the inference path reading the features the objective trained."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from mer_jax import color, correspondence, export, losses, objective, sampler, train, train_state
from mer_jax.models import mer
from mer_jax.models import ven as ven_lib

SWITCHES = ("use_flow", "use_ven", "use_sampler", "use_weight_map", "use_pos_neg")


def config_with(**switches):
    config = demo.get_config("debug")
    for name in SWITCHES:
        config.model[name] = switches.get(name, False)
    return config


def setup(config, batch_size=2, seed=0):
    """(objective, initial state, a random batch of clips)."""
    model, init_fn, _ = train_state.make_initializer(config, total_steps=10)
    rng = np.random.default_rng(seed)
    clip = (batch_size, config.data.num_refs + 1, config.data.image_size, config.data.image_size)
    batch = {
        "frames": rng.integers(0, 256, (*clip, 3), dtype=np.uint8),
        "flow": rng.normal(size=(*clip, 2)).astype(np.float32) * 2,
        "video_id": np.arange(batch_size, dtype=np.int32),
    }
    return objective.from_config(config, model, total_steps=10), init_fn(), batch


def loss_of(obj, state, batch, params=None, step=0, rng=jax.random.PRNGKey(3)):
    """The objective, jitted: one compilation is several times cheaper than its thousands of
    operations dispatched one by one."""
    params = state.params if params is None else params
    return jax.jit(lambda *args: obj(*args))(params, state.batch_stats, batch, rng, jnp.int32(step), state.memory_bank)


def stage_one(obj, state, batch, params=None, rng=jax.random.PRNGKey(3)):
    """What `Objective.__call__` computes before the reconstruction, with the same random streams:
    (clean Lab clips, dropped channels, network output)."""
    dropout_rng, dropkey_rng, _, _ = jax.random.split(rng, 4)
    clean = color.uint8_rgb_to_normalized_lab(batch["frames"], obj.lab_mean, obj.lab_std)
    inputs, dropped = color.channel_dropout(dropout_rng, clean)
    variables = {"params": state.params if params is None else params, "batch_stats": state.batch_stats}
    stages = jax.jit(lambda *args: obj.stages(*args).out)
    return clean, dropped, stages(variables, clean, inputs, batch["flow"], jnp.int32(0), dropkey_rng)


def recon_error(obj, clean, dropped, query, refs, pixel_radius=None, **local):
    """Mean reconstruction error of the target from `refs` through `query` (jitted)."""

    def error(query, refs, clean, dropped, pixel_radius):
        colours = obj.reference_colours(clean)
        prediction = correspondence.local_reconstruct(
            query,
            refs,
            colours,
            temperature=obj.reconstruction.temperature,
            tile=obj.reconstruction.tile,
            pixel_radius=pixel_radius,
            **local,
        )
        return jnp.mean(obj.loss.error(prediction, clean[:, -1], dropped))

    return float(jax.jit(error)(query, refs, clean, dropped, pixel_radius))


def test_weight_map_weighs_the_pixels_of_high_value():
    obj, _, _ = setup(config_with(use_weight_map=True))
    value_map = np.zeros((1, 4, 4), np.float32)
    value_map[0, 1, 2] = 3.0  # One moving pixel; min-max normalised it is 1, the rest 0.
    out = mer.MEROutput(features=None, query=None, value_map=jnp.asarray(value_map))
    errors = np.random.default_rng(0).uniform(size=(1, 4, 4, 1)).astype(np.float32)
    step = 5  # gamma = 5 / total_steps (10): the other pixels weigh 0.5.
    weights = np.full((4, 4), 0.5)
    weights[1, 2] = 1.0
    want = np.sum(weights * errors[0, ..., 0]) / weights.sum()
    weighted = obj.weights(obj.motion_value_map(out), errors.shape[1:3], jnp.int32(step))
    np.testing.assert_allclose(float(obj.weighted_error(errors, weighted)), want, rtol=1e-6)
    hot, cold = errors.copy(), errors.copy()
    hot[0, 1, 2] += 1.0
    cold[0, 3, 3] += 1.0
    rise_hot = float(obj.weighted_error(hot, weighted)) - want
    rise_cold = float(obj.weighted_error(cold, weighted)) - want
    np.testing.assert_allclose([rise_hot, rise_cold], [1.0 / weights.sum(), 0.5 / weights.sum()], rtol=1e-5)


def test_without_the_switch_the_error_is_a_plain_mean():
    obj, state, batch = setup(config_with())
    clean = color.uint8_rgb_to_normalized_lab(batch["frames"], obj.lab_mean, obj.lab_std)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    stages = obj.stages(variables, clean, clean, None, jnp.int32(0))
    assert stages.intermediates == objective.Intermediates(None, None, None)
    errors = np.random.default_rng(1).uniform(size=(2, 4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(float(obj.weighted_error(errors, None)), errors.mean(), rtol=1e-6)


def test_lambda_pn_scales_the_positive_negative_term():
    config = config_with(use_pos_neg=True)
    totals = {}
    for lam in (0.0, 0.5, 2.0):
        config.loss.lambda_pn = lam
        obj, state, batch = setup(config)
        totals[lam], aux = loss_of(obj, state, batch)
    recon, pn = float(aux.parts["loss_recon"]), float(aux.parts["loss_pn"])
    assert pn > 0.1
    np.testing.assert_allclose(float(totals[0.0]), recon, rtol=1e-6)
    np.testing.assert_allclose(float(totals[0.5]), recon + 0.5 * pn, rtol=1e-5)
    np.testing.assert_allclose(float(totals[2.0]), recon + 2.0 * pn, rtol=1e-5)
    # Warmed up over 10 steps, lambda_pn = 2.0 weighs 1.0 at step 5 and 2.0 from step 10 on.
    warm = dataclasses.replace(obj, loss=dataclasses.replace(obj.loss, pn_warmup_steps=10))
    for step, weight in ((0, 0.0), (5, 1.0), (12, 2.0)):
        total, aux = loss_of(warm, state, batch, step=step)
        np.testing.assert_allclose(float(total), recon + weight * pn, rtol=1e-5)
        np.testing.assert_allclose(float(aux.parts["loss_pn"]), pn, rtol=1e-6)


def test_the_ven_refined_query_is_the_one_that_reconstructs():
    config = config_with(use_ven=True)
    config.model.reconstruction.temperature = 0.01  # Sharp affinities: the query decides the copy.
    obj, state, batch = setup(config)
    params = jax.tree.map(lambda x: x, state.params)
    kernel = params["ven"]["out"]["kernel"]  # A strong VEN output, so that refined != encoder features.
    params["ven"]["out"]["kernel"] = 3.0 * jax.random.normal(jax.random.PRNGKey(7), kernel.shape)
    _, aux = loss_of(obj, state, batch, params=params)
    clean, dropped, out = stage_one(obj, state, batch, params=params)
    assert float(jnp.abs(out.query - out.features[:, -1]).mean()) > 0.1
    local = dict(radius=config.model.reconstruction.radius, ref_fusion="joint")
    refined = recon_error(obj, clean, dropped, out.query, out.features[:, :-1], **local)
    unrefined = recon_error(obj, clean, dropped, out.features[:, -1], out.features[:, :-1], **local)
    np.testing.assert_allclose(float(aux.parts["recon_error"]), refined, rtol=1e-5)
    assert abs(refined - unrefined) > 1e-4 * refined  # 10x the tolerance of the match above


def test_encoder_recon_weight_adds_the_encoders_own_reconstruction():
    config = config_with(use_ven=True)
    config.model.reconstruction.temperature = 0.01
    obj, state, batch = setup(config)
    params = jax.tree.map(lambda x: x, state.params)
    kernel = params["ven"]["out"]["kernel"]  # refined != encoder features, so the two terms differ.
    params["ven"]["out"]["kernel"] = 3.0 * jax.random.normal(jax.random.PRNGKey(7), kernel.shape)
    clean, dropped, out = stage_one(obj, state, batch, params=params)
    local = dict(radius=config.model.reconstruction.radius, ref_fusion="joint")
    refined = recon_error(obj, clean, dropped, out.query, out.features[:, :-1], **local)
    encoder = recon_error(obj, clean, dropped, out.features[:, -1], out.features[:, :-1], **local)
    assert abs(refined - encoder) > 1e-4 * refined  # 10x the tolerance of the matches below
    for weight in (0.0, 2.0):
        weighted = dataclasses.replace(obj, loss=dataclasses.replace(obj.loss, encoder_recon_weight=weight))
        total, aux = loss_of(weighted, state, batch, params=params)
        np.testing.assert_allclose(float(total), refined + weight * encoder, rtol=1e-5)
        np.testing.assert_allclose(float(aux.parts["loss_recon_encoder"]), encoder if weight else 0.0, rtol=1e-5)


def test_the_sampler_radii_reach_the_affinity_mask():
    config = config_with(use_sampler=True)
    config.model.reconstruction.temperature = 0.01  # Sharp affinities: the window decides the copy.
    obj, state, batch = setup(config)
    _, aux = loss_of(obj, state, batch)
    clean, dropped, out = stage_one(obj, state, batch)
    window = config.model.sampler.radius_max
    radii = sampler.Sampler(**config.model.sampler)(out.features[:, -1]).radius
    assert (np.asarray(radii) < window).any(), "the test needs pixels whose radius is below the window"
    refs = out.features[:, :-1]
    with_radii = recon_error(obj, clean, dropped, out.query, refs, radius=window, pixel_radius=radii)
    fixed = recon_error(obj, clean, dropped, out.query, refs, radius=window)
    np.testing.assert_allclose(float(aux.parts["recon_error"]), with_radii, rtol=1e-5)
    assert abs(with_radii - fixed) > 1e-4 * fixed
    # The loss returns the sampler's output it used, regions included, for the diagnostics.
    sampled = sampler.Sampler(**config.model.sampler)(out.features[:, -1])
    for got, want in zip(aux.intermediates.sampled, sampled):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert aux.intermediates.value_map is None and aux.intermediates.weight_map is None


def test_the_loss_returns_the_weight_map_it_applied():
    config = config_with(use_weight_map=True)
    obj, state, batch = setup(config)
    step = 4
    _, aux = loss_of(obj, state, batch, step=step)
    clean, dropped, out = stage_one(obj, state, batch)
    # Without the VEN the value map is computed from the encoder features (window, beta).
    window, beta = config.model.value_map.window, config.model.value_map.beta
    value_map = ven_lib.window_value_map(out.features[:, -1], out.features[:, :-1], window, beta)
    np.testing.assert_allclose(np.asarray(aux.intermediates.value_map), np.asarray(value_map), rtol=1e-5, atol=1e-6)
    size = batch["frames"].shape[2:4]
    weights = losses.weight_map(value_map, size, jnp.float32(step / 10))  # gamma ramps over the 10 steps.
    np.testing.assert_allclose(np.asarray(aux.intermediates.weight_map), np.asarray(weights), rtol=1e-5, atol=1e-6)
    assert aux.intermediates.sampled is None


@pytest.mark.parametrize(
    "section,field", [("model.sampler", "radius_max"), ("loss", "lambda_pn"), ("memory", "bank_pixels")]
)
def test_a_renamed_config_field_fails_where_the_objective_is_built(section, field):
    config = config_with(use_sampler=True, use_pos_neg=True)
    fields = config
    for name in section.split("."):
        fields = fields[name]
    with config.unlocked():
        fields[field + "_renamed"] = fields[field]
        del fields[field]
    model, _, _ = train_state.make_initializer(config_with(), total_steps=10)
    with pytest.raises(TypeError, match=f"{field}_renamed"):
        objective.from_config(config, model, total_steps=10)


@pytest.mark.parametrize("use_flow,use_ven", [(False, False), (True, True)])
def test_embed_returns_the_features_the_objective_used(use_flow, use_ven):
    config = config_with(use_flow=use_flow, use_ven=use_ven)
    obj, state, batch = setup(config)
    lab = color.uint8_rgb_to_normalized_lab(batch["frames"], obj.lab_mean, obj.lab_std)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    stages = obj.stages(variables, lab, lab, batch["flow"], jnp.int32(0), jax.random.PRNGKey(0))
    trained = stages.out.features  # [B, N, h, w, D]
    exported = export.ExportedModel(obj.model, variables, config)
    frames, flow = batch["frames"], batch["flow"]
    embedded = export.embed(exported, frames.reshape(-1, *frames.shape[2:]), flow.reshape(-1, *flow.shape[2:]))
    np.testing.assert_allclose(np.asarray(embedded), np.asarray(trained).reshape(embedded.shape), rtol=1e-5, atol=1e-6)


def abstract_step(config):
    obj, _, _ = setup(config)
    _, init_fn, schedule = train_state.make_initializer(config, total_steps=10)
    clip = (config.batch_size, config.data.num_refs + 1, config.data.image_size, config.data.image_size)
    batch = {
        "frames": jax.ShapeDtypeStruct((*clip, 3), np.uint8),
        "flow": jax.ShapeDtypeStruct((*clip, 2), np.float32),
        "video_id": jax.ShapeDtypeStruct((config.batch_size,), np.int32),
    }
    return jax.eval_shape(
        lambda s, b: train.train_step(s, b, loss_fn=obj, schedule=schedule), jax.eval_shape(init_fn), batch
    )


def _switch_combinations():
    """All 32 combinations of the switches; those with 2 to 4 on are in the slow tier (the fast
    one traces none, each alone and all)."""
    for flags in itertools.product([False, True], repeat=len(SWITCHES)):
        yield flags if sum(flags) in (0, 1, len(SWITCHES)) else pytest.param(flags, marks=pytest.mark.slow)


@pytest.mark.parametrize("flags", list(_switch_combinations()))
def test_every_switch_combination_traces(flags):
    state, metrics, finite = abstract_step(config_with(**dict(zip(SWITCHES, flags))))
    assert metrics.loss.total.shape == () and finite.dtype == bool
    assert (state.memory_bank is not None) == flags[SWITCHES.index("use_pos_neg")]
    assert ("flow_fusion" in state.params) == flags[SWITCHES.index("use_flow")]
    assert ("ven" in state.params) == flags[SWITCHES.index("use_ven")]


@pytest.mark.slow
def test_memory_bank_fills_with_other_batches_and_is_checkpointed(tmp_path):
    config = config_with(use_pos_neg=True)
    state = train.train_and_evaluate(config, str(tmp_path))
    bank = state.memory_bank
    per_step = config.batch_size * config.memory.bank_pixels
    slots = config.memory.bank_frames * config.memory.bank_pixels
    assert int(bank.pointer) == (4 * per_step) % slots
    assert int(np.asarray(bank.filled).sum()) == min(4 * per_step, slots)
    restored = train.train_and_evaluate(config, str(tmp_path))  # finished run: restores the saved state
    for a, b in zip(jax.tree.leaves(restored.memory_bank), jax.tree.leaves(bank)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_median_fusion_with_negatives_is_rejected_naming_the_fields():
    config = config_with(use_pos_neg=True)
    config.model.reconstruction.ref_fusion = "median"
    with pytest.raises(ValueError, match="model.use_pos_neg=True needs model.reconstruction.ref_fusion='joint'"):
        objective.from_config(config, train_state.build_model(config), 10)


def test_flow_fusion_gets_gradients_from_the_loss():
    obj, state, batch = setup(config_with(use_flow=True))
    grads = jax.grad(lambda p: loss_of(obj, state, batch, params=p)[0])(state.params)
    assert float(jnp.abs(grads["flow_fusion"]["alpha"])) > 0


def test_raw_features_at_the_reconstruction_temperature_reuse_the_positive_softmax():
    """pn_normalize=False at pn_temperature == the reconstruction's: the positive part of the joint
    softmax is the plain reconstruction, so recon_error is the same as without the pos/neg term."""
    config = config_with(use_pos_neg=True)
    config.loss.pn_normalize = False
    config.loss.pn_temperature = config.model.reconstruction.temperature
    obj, state, batch = setup(config)
    _, aux = loss_of(obj, state, batch)
    clean, dropped, out = stage_one(obj, state, batch)
    plain = recon_error(obj, clean, dropped, out.query, out.features[:, :-1], radius=obj.reconstruction.radius)
    np.testing.assert_allclose(float(aux.parts["recon_error"]), plain, rtol=1e-5)
