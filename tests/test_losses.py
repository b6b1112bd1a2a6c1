"""Loss functions against NumPy references and hand-computed cases."""

import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax import losses


def numpy_smooth_l1(x):
    return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)


def test_smooth_l1_hand_values():
    np.testing.assert_allclose(
        np.asarray(losses.smooth_l1(np.array([0.0, 0.5, -0.5, 1.0, -3.0]))), [0, 0.125, 0.125, 0.5, 2.5]
    )


@pytest.mark.parametrize("channels", ["dropped", "all"])
def test_reconstruction_error_matches_numpy(channels):
    rng = np.random.default_rng(0)
    prediction = rng.normal(size=(2, 1, 1, 3)).astype(np.float32) * 0.1  # constant maps upsample exactly
    target = rng.normal(size=(2, 8, 8, 3)).astype(np.float32) * 0.1
    dropped = np.array([1, 2])
    got = jnp.mean(losses.reconstruction_error(prediction, target, dropped, loss_scale=30.0, loss_channels=channels))
    per = numpy_smooth_l1(30.0 * (prediction - target))
    want = per.mean() if channels == "all" else np.mean([per[0, ..., 1], per[1, ..., 2]])
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_upsampling_is_bilinear_half_pixel():
    # 2x upsampling of [0, 1] with half-pixel centres gives [0, .25, .75, 1] (PyTorch align_corners=False).
    prediction = np.array([0.0, 1.0], np.float32).reshape(1, 1, 2, 1).repeat(3, -1)
    target = np.array([0.0, 0.25, 0.75, 1.0], np.float32).reshape(1, 1, 4, 1).repeat(3, -1).repeat(2, 1)
    got = jnp.mean(losses.reconstruction_error(prediction, target, np.array([1]), loss_scale=1.0, loss_channels="all"))
    assert float(got) < 1e-10
    shifted = jnp.mean(
        losses.reconstruction_error(prediction, target + 0.1, np.array([1]), loss_scale=1.0, loss_channels="all")
    )
    np.testing.assert_allclose(float(shifted), 0.5 * 0.1**2, rtol=1e-4)


def test_unknown_channels_rejected():
    with pytest.raises(ValueError, match="loss_channels"):
        losses.reconstruction_error(
            np.zeros((1, 1, 1, 3)), np.zeros((1, 2, 2, 3)), np.array([1]), loss_scale=1.0, loss_channels="ab"
        )


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


def test_warmup_factor_rises_linearly_then_stays_at_one():
    for step, want in ((0, 0.0), (5, 0.5), (10, 1.0), (25, 1.0)):
        assert float(losses.warmup_factor(jnp.int32(step), 10)) == pytest.approx(want)
    assert float(losses.warmup_factor(jnp.int32(0), 0)) == 1.0  # No warm-up: the full weight at once.
    with pytest.raises(ValueError, match="warmup_steps"):
        losses.warmup_factor(jnp.int32(0), -1)
