"""Pure loss functions of the reconstruction objective (spec section 5)."""

import jax
import jax.numpy as jnp

LOSS_CHANNELS = ("dropped", "all")


def smooth_l1(x: jax.Array) -> jax.Array:
    """Elementwise smooth-L1 (Huber with delta 1): 0.5 x^2 for |x| < 1, else |x| - 0.5."""
    ax = jnp.abs(x)
    return jnp.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def reconstruction_loss(
    prediction: jax.Array,
    target: jax.Array,
    dropped_channel: jax.Array,
    *,
    loss_scale: float,
    loss_channels: str,
) -> jax.Array:
    """Mean smooth-L1 between the upsampled reconstruction and the clean target frame.

    Args:
      prediction: [B, h, w, 3] reconstruction at feature resolution (normalised Lab).
      target: [B, H, W, 3] clean target frame (normalised Lab).
      dropped_channel: [B] int index of the channel dropped from the inputs.
      loss_scale: s in smoothL1(s * (prediction - target)).
      loss_channels: 'dropped' regresses only each clip's dropped channel, 'all' all three.

    Returns:
      Scalar loss.
    """
    if loss_channels not in LOSS_CHANNELS:
        raise ValueError(f"loss_channels must be one of {LOSS_CHANNELS}, got {loss_channels!r}")
    upsampled = jax.image.resize(prediction, target.shape, "bilinear")
    per_channel = smooth_l1(loss_scale * (upsampled - target))  # [B, H, W, 3]
    if loss_channels == "all":
        return jnp.mean(per_channel)
    selected = jnp.take_along_axis(per_channel, dropped_channel[:, None, None, None], axis=-1)
    return jnp.mean(selected)
