"""Operations on maps [..., H, W, C] shared by training and evaluation: block averaging and
L2 normalisation (each written once here)."""

import jax
import jax.numpy as jnp
import numpy as np

_NORM_EPS = 1e-12


def block_sums(x: jax.Array, factor: int) -> jax.Array:
    """Sums over non-overlapping factor x factor blocks from the top-left, zero-padded.

    Args:
      x: [..., H, W, C].
      factor: block side.

    Returns:
      [..., ceil(H / factor), ceil(W / factor), C]; a partial block at the border sums only the
      pixels it contains.
    """
    *lead, h, w, c = x.shape
    rows, cols = -(-h // factor), -(-w // factor)
    pad = [(0, 0)] * len(lead) + [(0, rows * factor - h), (0, cols * factor - w), (0, 0)]
    return jnp.pad(x, pad).reshape(*lead, rows, factor, cols, factor, c).sum(axis=(-4, -2))


def average_pool(x: jax.Array, factor: int) -> jax.Array:
    """Averages non-overlapping factor x factor blocks: [..., H, W, C] -> [..., ceil(H/f), ceil(W/f), C].

    A partial block at the border averages only the pixels it contains.
    """
    h, w = x.shape[-3:-1]
    counts = block_sums(np.ones((h, w, 1), np.float32), factor)  # [rows, cols, 1]
    return block_sums(x, factor) / jnp.asarray(counts, x.dtype)


def l2_normalize(x: jax.Array) -> jax.Array:
    """x / max(||x||, 1e-12) along the last axis (a zero vector stays zero)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _NORM_EPS)
