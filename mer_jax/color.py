"""Colour handling: sRGB -> CIE Lab (D65), MER's Lab normalisation and MAST channel dropout.

Works on `jax.Array`s inside jitted code; the maths follow the sRGB and CIE 1976 L*a*b*
definitions (the same as OpenCV's float `COLOR_RGB2Lab`, which the tests use as reference).
"""

import jax
import jax.numpy as jnp
import numpy as np

# sRGB (linear) -> XYZ, D65 white point (IEC 61966-2-1). NumPy, not jnp: module constants must not
# start the JAX backend at import (jax.distributed.initialize has to come first).
_RGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=np.float32,
)
_D65_WHITE = np.array([0.950456, 1.0, 1.088754], dtype=np.float32)
_EPSILON = (6.0 / 29.0) ** 3
_KAPPA_SLOPE = (29.0 / 6.0) ** 2 / 3.0


def rgb_to_lab(rgb: jax.Array) -> jax.Array:
    """Converts sRGB in [0, 1] to CIE Lab.

    Args:
      rgb: [..., 3] float sRGB (gamma-encoded) in [0, 1].

    Returns:
      [..., 3] float32 Lab with L in [0, 100] and a, b roughly in [-127, 127].
    """
    rgb = jnp.asarray(rgb, jnp.float32)
    linear = jnp.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = (linear @ _RGB_TO_XYZ.T) / _D65_WHITE
    f = jnp.where(xyz > _EPSILON, jnp.cbrt(jnp.maximum(xyz, _EPSILON)), _KAPPA_SLOPE * xyz + 4.0 / 29.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return jnp.stack([lightness, a, b], axis=-1)


def normalize_lab(lab: jax.Array, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
    """(lab - mean) / std per channel; lab [..., 3] -> [..., 3]."""
    return (lab - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def uint8_rgb_to_normalized_lab(frames: jax.Array, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
    """uint8 RGB frames [..., 3] -> normalised float32 Lab [..., 3]."""
    return normalize_lab(rgb_to_lab(frames.astype(jnp.float32) / 255.0), mean, std)


def channel_dropout(rng: jax.Array, clips: jax.Array) -> tuple[jax.Array, jax.Array]:
    """MAST channel dropout: per clip, zero one of the a/b channels and scale the rest by 3/2.

    The same channel is dropped in every frame of a clip.

    Args:
      rng: PRNG key.
      clips: [B, N, H, W, 3] normalised Lab.

    Returns:
      (dropped [B, N, H, W, 3] inputs, channel [B] int32 index of the dropped channel, 1 or 2).
    """
    channel = jax.random.randint(rng, (clips.shape[0],), 1, 3)
    keep = jnp.arange(3)[None, :] != channel[:, None]  # [B, 3]
    scale = jnp.where(keep, 1.5, 0.0)[:, None, None, None, :]
    return clips * scale, channel
