"""Pure loss functions of the reconstruction objective (docs/method.md, 'Reconstruction and losses')."""

import jax
import jax.numpy as jnp

LOSS_CHANNELS = ("dropped", "all")


def smooth_l1(x: jax.Array) -> jax.Array:
    """Elementwise smooth-L1 (Huber with delta 1): 0.5 x^2 for |x| < 1, else |x| - 0.5."""
    ax = jnp.abs(x)
    return jnp.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def reconstruction_error(
    prediction: jax.Array,
    target: jax.Array,
    dropped_channel: jax.Array,
    *,
    loss_scale: float,
    loss_channels: str,
) -> jax.Array:
    """Per-pixel smooth-L1 between the upsampled reconstruction and the clean target frame.

    Args:
      prediction: [B, h, w, 3] reconstruction at feature resolution (normalised Lab).
      target: [B, H, W, 3] clean target frame (normalised Lab).
      dropped_channel: [B] int index of the channel dropped from the inputs.
      loss_scale: s in smoothL1(s * (prediction - target)).
      loss_channels: 'dropped' regresses only each clip's dropped channel, 'all' all three.

    Returns:
      [B, H, W, 1] ('dropped') or [B, H, W, 3] ('all') errors; the prediction is upsampled
      bilinearly (half-pixel centres) to the target's size.
    """
    if loss_channels not in LOSS_CHANNELS:
        raise ValueError(f"loss_channels must be one of {LOSS_CHANNELS}, got {loss_channels!r}")
    upsampled = jax.image.resize(prediction, target.shape, "bilinear")
    per_channel = smooth_l1(loss_scale * (upsampled - target))  # [B, H, W, 3]
    if loss_channels == "all":
        return per_channel
    return jnp.take_along_axis(per_channel, dropped_channel[:, None, None, None], axis=-1)


def gamma_ramp(step: jax.Array, ramp_steps: int) -> jax.Array:
    """gamma rising linearly from 0 at step 0 to 1 at `ramp_steps` (then 1)."""
    return jnp.clip(step / max(ramp_steps, 1), 0.0, 1.0)


def warmup_factor(step: jax.Array, warmup_steps: int) -> jax.Array:
    """min(step / warmup_steps, 1), rising linearly from 0 at step 0; 1 throughout for warmup_steps=0."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_steps == 0:
        return jnp.ones((), jnp.float32)
    return jnp.clip(step / warmup_steps, 0.0, 1.0).astype(jnp.float32)


def weight_map(value_map: jax.Array, size: tuple[int, int], gamma: jax.Array) -> jax.Array:
    """w = max(W, gamma), W the value map upsampled (bilinear) and min-max normalised per frame.

    Args:
      value_map: [B, h, w] potential value map P.
      size: (H, W) of the target frame.
      gamma: scalar floor of the weights.

    Returns:
      [B, H, W] weights in [gamma, 1] (no gradient flows into them).
    """
    value_map = jax.lax.stop_gradient(value_map)
    up = jax.image.resize(value_map, (value_map.shape[0], *size), "bilinear")
    low = up.min(axis=(1, 2), keepdims=True)
    high = up.max(axis=(1, 2), keepdims=True)
    normalised = (up - low) / jnp.maximum(high - low, 1e-6)
    return jnp.maximum(normalised, gamma)


def weighted_mean(errors: jax.Array, weights: jax.Array) -> jax.Array:
    """sum_i w_i e_i / sum_i w_i over pixels (errors [B, H, W, C] averaged over C; weights [B, H, W])."""
    return jnp.sum(weights * errors.mean(-1)) / jnp.maximum(jnp.sum(weights), 1e-12)


def positive_mass_loss(log_positive_mass: jax.Array) -> jax.Array:
    """-mean_i log(probability mass on the positives), log_positive_mass [B, h, w]: a scalar."""
    return -jnp.mean(log_positive_mass)
