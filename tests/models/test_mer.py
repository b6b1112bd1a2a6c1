"""The MER network's composition against its parts applied one after the other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from mer_jax import train_state
from mer_jax.models import encoder, flow_fusion, ven


def model_and_inputs(use_flow, use_ven):
    config = demo.get_config("debug")
    config.model.use_flow, config.model.use_ven = use_flow, use_ven
    model = train_state.build_model(config)
    rng = np.random.default_rng(0)
    frames = jnp.asarray(rng.normal(size=(2, 3, 32, 32, 3)).astype(np.float32))
    flow = jnp.asarray(rng.normal(size=(2, 3, 32, 32, 2)).astype(np.float32))
    variables = model.init({"params": jax.random.PRNGKey(0), "dropkey": jax.random.PRNGKey(1)}, frames, flow)
    return config, model, variables, frames, flow


def test_flow_is_fused_before_the_encoder_and_the_ven_refines_the_target():
    config, model, variables, frames, flow = model_and_inputs(use_flow=True, use_ven=True)
    params, stats = variables["params"], variables["batch_stats"]
    kernel = params["ven"]["out"]["kernel"]  # Zero-initialised: a random one, so the VEN shows.
    params["ven"]["out"]["kernel"] = jax.random.normal(jax.random.PRNGKey(5), kernel.shape)
    variables = {**variables, "params": params}
    out = model.apply(variables, frames, flow)
    fused = flow_fusion.FlowFusion(
        **config.model.flow, lab_mean=config.data.lab_mean, lab_std=config.data.lab_std
    ).apply({"params": params["flow_fusion"]}, frames, flow)
    features = encoder.Encoder(**config.model.encoder).apply(
        {"params": params["encoder"], "batch_stats": stats["encoder"]}, fused.combined().reshape(6, 32, 32, 5)
    )
    np.testing.assert_allclose(np.asarray(out.features), np.asarray(features).reshape(out.features.shape), atol=1e-6)
    refined = ven.ValueExtractionNetwork(**config.model.ven, **config.model.value_map).apply(
        {"params": params["ven"]}, out.features[:, -1], out.features[:, :-1], train=False
    )
    np.testing.assert_allclose(np.asarray(out.query), np.asarray(refined.features), atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.value_map), np.asarray(refined.value_map), atol=1e-6)
    single = model.apply(variables, frames, flow, refine=False)
    np.testing.assert_array_equal(np.asarray(single.query), np.asarray(single.features[:, -1]))
    assert single.value_map is None


def test_without_modules_the_query_is_the_target_features():
    _, model, variables, frames, _ = model_and_inputs(use_flow=False, use_ven=False)
    out = model.apply(variables, frames)
    assert set(variables["params"]) == {"encoder"}
    np.testing.assert_array_equal(np.asarray(out.query), np.asarray(out.features[:, -1]))


def test_a_flow_model_without_flow_is_a_clear_error():
    _, model, variables, frames, _ = model_and_inputs(use_flow=True, use_ven=False)
    with pytest.raises(ValueError, match="fuses optical flow"):
        model.apply(variables, frames)
