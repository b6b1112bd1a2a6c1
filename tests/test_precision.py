"""Mixed precision (config.compute_dtype) and encoder rematerialisation (config.remat)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from mer_jax import objective, train, train_state
from mer_jax.data import synthetic_video


def debug_config(**top_level):
    config = demo.get_config("debug")
    config.model.encoder.bn_mode = "batch"
    for key, value in top_level.items():
        config[key] = value
    return config


def clip_batch(config, seed=0):
    """A batch of real (generated) clips with exact flow, so that losses are meaningful."""
    size, frames = config.data.image_size, config.data.num_refs + 1
    videos = synthetic_video.generate_videos(seed, config.batch_size, num_frames=frames * 2, height=size, width=size,
                                             num_objects=2)  # fmt: skip
    return {
        "frames": jnp.asarray(np.stack([v.frames[::2] for v in videos])),
        "flow": jnp.asarray(np.stack([v.flow[::2] for v in videos])),
        "video_id": jnp.arange(config.batch_size, dtype=jnp.int32),
    }


def one_step(config, batch):
    """(state after one train step, its metrics, the loss function) from the config's initial state."""
    model, init_fn, schedule = train_state.make_initializer(config, total_steps=10)
    loss_fn = objective.from_config(config, model, total_steps=10)
    step = jax.jit(lambda s, b: train.train_step(s, b, loss_fn=loss_fn, schedule=schedule))
    state, metrics, finite = step(init_fn(), batch)
    assert bool(finite)
    return state, metrics, loss_fn, init_fn


@pytest.mark.slow
def test_bfloat16_step_matches_float32_within_tolerance_and_keeps_float32_state():
    batch = clip_batch(debug_config())
    f32_state, f32_metrics, _, init_fn = one_step(debug_config(), batch)
    bf16_state, bf16_metrics, _, _ = one_step(debug_config(compute_dtype="bfloat16"), batch)
    f32_loss, bf16_loss = float(f32_metrics.loss.compute()), float(bf16_metrics.loss.compute())
    # bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2%); the loss, a mean over
    # many pixels, must agree to 1% (measured here: 0.03%).
    assert abs(bf16_loss - f32_loss) <= 0.01 * abs(f32_loss), (bf16_loss, f32_loss)
    assert bf16_loss != f32_loss  # bfloat16 really was used
    for tree in (bf16_state.params, bf16_state.opt_state, bf16_state.batch_stats):
        floats = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert floats and all(x.dtype == jnp.float32 for x in floats)
    # The update direction agrees: cosine similarity of the parameter changes.
    initial = jax.tree.leaves(init_fn().params)  # the same initial state for both dtypes
    delta32 = np.concatenate([np.ravel(a - b) for a, b in zip(jax.tree.leaves(f32_state.params), initial)])
    delta16 = np.concatenate([np.ravel(a - b) for a, b in zip(jax.tree.leaves(bf16_state.params), initial)])
    assert delta32 @ delta16 / np.linalg.norm(delta32) / np.linalg.norm(delta16) > 0.95


def test_bfloat16_convolutions_and_float32_softmax():
    config = debug_config(compute_dtype="bfloat16")
    batch = clip_batch(config)
    model, init_fn, _ = train_state.make_initializer(config, total_steps=10)
    loss_fn = objective.from_config(config, model, total_steps=10)
    state = jax.eval_shape(init_fn)  # Traced, not run: the bfloat16 step itself is run by the test above.
    jaxpr = jax.make_jaxpr(lambda p, stats, bank: loss_fn(p, stats, batch, jax.random.PRNGKey(0), 0, bank)[0])(
        state.params, state.batch_stats, state.memory_bank
    )
    text = str(jaxpr)
    assert "conv_general_dilated" in text
    convs = [line for line in text.splitlines() if "conv_general_dilated" in line]
    assert all("bf16" in line for line in convs), convs[:2]
    exps = [line for line in text.splitlines() if "= exp " in line]
    assert exps and not any("bf16" in line for line in exps)  # softmaxes stay float32


@pytest.mark.slow
def test_remat_gives_the_same_gradients_and_parameter_tree():
    batch = clip_batch(debug_config())
    plain_state, plain_metrics, plain_loss, init_fn = one_step(debug_config(), batch)
    remat_state, remat_metrics, remat_loss, _ = one_step(debug_config(remat=True), batch)
    assert jax.tree.structure(plain_state.params) == jax.tree.structure(remat_state.params)
    np.testing.assert_allclose(float(remat_metrics.loss.compute()), float(plain_metrics.loss.compute()), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 remat_state.params, plain_state.params)  # fmt: skip
    state = init_fn()

    def jaxpr_of(loss_fn):
        grad = jax.grad(lambda p: loss_fn(p, state.batch_stats, batch, jax.random.PRNGKey(0), 0, state.memory_bank)[0])
        return str(jax.make_jaxpr(grad)(state.params))

    # Eight residual blocks and the three reconstructions (with the VEN's query, with the encoder's
    # own query, and with negatives) rematerialised; the VEN's attention chunks are checkpointed in both.
    assert jaxpr_of(remat_loss).count("remat") - jaxpr_of(plain_loss).count("remat") == 8 + 3


def test_unknown_compute_dtype_is_rejected():
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        train_state.build_model(debug_config(compute_dtype="float16"))
