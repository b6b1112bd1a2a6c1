"""MER's training forward pass: the fused loss pieces against NumPy, and every switch combination."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from mer_jax import correspondence, losses, train, train_state

SWITCHES = ("use_flow", "use_ven", "use_sampler", "use_weight_map", "use_pos_neg")


def test_reconstruction_with_negatives_matches_a_dense_softmax():
    rng = np.random.default_rng(0)
    b, r, h, w, c, m = 2, 2, 5, 6, 4, 7
    query = rng.normal(size=(b, h, w, c)).astype(np.float32)
    keys = rng.normal(size=(b, r, h, w, c)).astype(np.float32)
    values = rng.normal(size=(b, r, h, w, 3)).astype(np.float32)
    neg_keys = rng.normal(size=(b, m, c)).astype(np.float32)
    neg_values = rng.normal(size=(b, m, 3)).astype(np.float32)
    neg_valid = rng.uniform(size=(b, m)) > 0.3
    out = correspondence.local_reconstruct_with_negatives(
        query, keys, values, neg_keys, neg_values, neg_valid, radius=1, temperature=0.5, tile=4
    )
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], -1)
    window = np.abs(pos[:, None] - pos[None]).max(-1) <= 1
    for i in range(b):
        q = query[i].reshape(h * w, c).astype(np.float64)
        local = np.einsum("qc,rkc->qrk", q, keys[i].reshape(r, h * w, c)) / 0.5
        local = np.where(window[:, None, :], local, -np.inf).reshape(h * w, -1)
        negative = np.where(neg_valid[i][None], q @ neg_keys[i].T / 0.5, -np.inf)
        joint = np.concatenate([local, negative], -1)
        weights = np.exp(joint - joint.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        all_values = np.concatenate([values[i].reshape(r * h * w, 3), neg_values[i]])
        mass = weights[:, : local.shape[1]].sum(-1)
        positive = weights[:, : local.shape[1]] @ values[i].reshape(r * h * w, 3) / mass[:, None]
        np.testing.assert_allclose(np.asarray(out.joint[i]).reshape(-1, 3), weights @ all_values, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.positive[i]).reshape(-1, 3), positive, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.log_positive_mass[i]).ravel(), np.log(mass), rtol=1e-4, atol=1e-5)
    plain = correspondence.local_reconstruct(query, keys, values, radius=1, temperature=0.5, tile=4)
    np.testing.assert_allclose(np.asarray(out.positive), np.asarray(plain), rtol=1e-5, atol=1e-6)


def test_no_valid_negatives_means_no_positive_negative_loss():
    rng = np.random.default_rng(1)
    query, keys = rng.normal(size=(1, 4, 4, 3)), rng.normal(size=(1, 1, 4, 4, 3))
    values = rng.normal(size=(1, 1, 4, 4, 3))
    out = correspondence.local_reconstruct_with_negatives(
        query, keys, values, np.ones((1, 5, 3)), np.ones((1, 5, 3)), np.zeros((1, 5), bool), radius=1, temperature=1.0,
        tile=4,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(out.log_positive_mass), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.joint), np.asarray(out.positive), atol=1e-6)


def test_gamma_ramp_is_linear_then_one():
    steps = jnp.array([0, 25, 50, 100, 150])
    np.testing.assert_allclose(np.asarray(losses.gamma_ramp(steps, 100)), [0.0, 0.25, 0.5, 1.0, 1.0])


def test_weight_map_normalises_and_floors():
    value_map = np.array([[[0.0, 2.0], [4.0, 8.0]]], np.float32)  # [1, 2, 2]
    weights = np.asarray(losses.weight_map(value_map, (2, 2), jnp.float32(0.3)))
    np.testing.assert_allclose(weights, [[[0.3, 0.3], [0.5, 1.0]]], atol=1e-6)
    errors = np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1)
    want = (0.3 * 0 + 0.3 * 1 + 0.5 * 2 + 1.0 * 3) / (0.3 + 0.3 + 0.5 + 1.0)
    np.testing.assert_allclose(float(losses.weighted_mean(errors, weights)), want, rtol=1e-6)
    assert np.all(np.asarray(losses.weight_map(value_map, (2, 2), jnp.float32(1.0))) == 1.0)  # late training


def config_with(**switches):
    config = demo.get_config("debug")
    for name in SWITCHES:
        config.model[name] = switches.get(name, False)
    return config


def abstract_step(config):
    model, init_fn, schedule = train_state.make_initializer(config, total_steps=10)
    clip = (config.batch_size, config.data.num_refs + 1, config.data.image_size, config.data.image_size)
    batch = {
        "frames": jax.ShapeDtypeStruct((*clip, 3), np.uint8),
        "flow": jax.ShapeDtypeStruct((*clip, 2), np.float32),
        "video_id": jax.ShapeDtypeStruct((config.batch_size,), np.int32),
    }
    loss_fn = train.make_loss_fn(config, model, total_steps=10)
    return jax.eval_shape(
        lambda s, b: train.train_step(s, b, loss_fn=loss_fn, schedule=schedule), jax.eval_shape(init_fn), batch
    )


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=len(SWITCHES))))
def test_every_switch_combination_traces(flags):
    state, metrics = abstract_step(config_with(**dict(zip(SWITCHES, flags))))
    assert metrics.loss.total.shape == ()
    assert (state.memory_bank is not None) == flags[SWITCHES.index("use_pos_neg")]
    assert ("flow_fusion" in state.params) == flags[SWITCHES.index("use_flow")]
    assert ("ven" in state.params) == flags[SWITCHES.index("use_ven")]


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_module_alone_trains(switch, tmp_path):
    state = train.train_and_evaluate(config_with(**{switch: True}), str(tmp_path))
    assert int(state.step) == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


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


def test_median_fusion_with_negatives_is_rejected():
    config = config_with(use_pos_neg=True)
    config.model.reconstruction.ref_fusion = "median"
    with pytest.raises(ValueError, match="ref_fusion='joint'"):
        train.make_loss_fn(config, train_state.build_model(config), 10)


def test_flow_fusion_gets_gradients_from_the_loss():
    config = config_with(use_flow=True)
    model, init_fn, _ = train_state.make_initializer(config, total_steps=10)
    state = init_fn()
    rng = np.random.default_rng(0)
    clip = (2, 3, 32, 32)
    batch = {
        "frames": rng.integers(0, 256, (*clip, 3), dtype=np.uint8),
        "flow": rng.normal(size=(*clip, 2)).astype(np.float32) * 3,
        "video_id": np.arange(2, dtype=np.int32),
    }
    loss_fn = train.make_loss_fn(config, model, total_steps=10)
    grads = jax.grad(lambda p: loss_fn(p, state.batch_stats, batch, jax.random.PRNGKey(0), 0, None)[0])(state.params)
    assert float(jnp.abs(grads["flow_fusion"]["alpha"])) > 0


def test_raw_feature_reading_of_the_pos_neg_loss_runs(tmp_path):
    """pn_normalize=False: the spec's raw features at the reconstruction temperature."""
    config = config_with(use_pos_neg=True)
    config.loss.pn_normalize = False
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 4
