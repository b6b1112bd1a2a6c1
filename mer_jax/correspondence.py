"""Local-window affinity and label/colour reconstruction (shared by training and evaluation).

See docs/method.md, 'Reconstruction and losses' and 'Label propagation'. Every target pixel
attends to the reference pixels within a square window (Chebyshev distance <= radius) around
its own position; the softmax runs jointly over all references' windows (`ref_fusion='joint'`),
or per reference followed by a per-pixel median (`'median'`).

The computation is tiled: the target grid is cut into `tile` x `tile` blocks, and each block
attends densely to the (tile + 2 radius)^2 reference pixels that cover all of its windows, with
the out-of-window and out-of-image entries masked. This is exactly a dense softmax with a
distance mask, costs O(HW (tile + 2r)^2) memory instead of O((HW)^2), and turns the work into
batched matrix products. Training cuts every tile row's windows at once (`reference_windows`);
label propagation cuts one tile row at a time (`row_windows` under `lax.map`) to bound memory.
Both score the windows with `window_logits`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

REF_FUSIONS = ("joint", "median")
POSITIVES = ("window", "best")  # The positives of `local_reconstruct_with_negatives`.
WINDOWS = ("square", "disk")
# Logit of a masked (out-of-window, out-of-image or left-out) entry: its softmax weight is exactly 0.
MASKED_LOGIT = -1e30


def num_tiles(size: int, tile: int) -> int:
    return -(-size // tile)


def tile_queries(x: jax.Array, tile: int) -> jax.Array:
    """[B, H, W, D] -> [B, nTy, nTx, tile*tile, D] (zero-padded to whole tiles)."""
    b, h, w, d = x.shape
    ny, nx = num_tiles(h, tile), num_tiles(w, tile)
    x = jnp.pad(x, ((0, 0), (0, ny * tile - h), (0, nx * tile - w), (0, 0)))
    x = x.reshape(b, ny, tile, nx, tile, d).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, ny, nx, tile * tile, d)


def untile_queries(x: jax.Array, height: int, width: int, tile: int) -> jax.Array:
    """Inverse of `tile_queries`: [B, nTy, nTx, tile*tile, D] -> [B, H, W, D]."""
    b, ny, nx, _, d = x.shape
    x = x.reshape(b, ny, nx, tile, tile, d).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, ny * tile, nx * tile, d)[:, :height, :width]


def pad_for_windows(x: jax.Array, radius: int, tile: int) -> jax.Array:
    """Zero-pads maps so that every query tile's window is a plain slice.

    Args:
      x: [..., H, W, D] maps.

    Returns:
      [..., nTy tile + 2 radius, nTx tile + 2 radius, D]: `radius` zero rows/cols before, the
      rest (radius plus the partial tile) after.
    """
    h, w = x.shape[-3:-1]
    rows, cols = num_tiles(h, tile) * tile, num_tiles(w, tile) * tile
    pad = [(0, 0)] * (x.ndim - 3) + [(radius, radius + rows - h), (radius, radius + cols - w), (0, 0)]
    return jnp.pad(x, pad)


def row_windows(
    padded: jax.Array,
    row: int | jax.Array,
    radius: int,
    tile: int,
    first_tile: int | jax.Array = 0,
    count: int | None = None,
) -> jax.Array:
    """Cuts the windows of one row of query tiles, or of `count` consecutive tiles of it.

    Args:
      padded: [..., Hp, Wp, D] maps from `pad_for_windows`.
      row: the tile row (a Python int or a traced scalar).
      first_tile: the first tile of the row to cut (a Python int or a traced scalar).
      count: how many tiles (None: the whole row; static).

    Returns:
      [..., n, S*S, D] with S = tile + 2 radius and n = count (or nTx): tile (row, x) sees padded
      rows [row tile, row tile + S) and cols [x tile, x tile + S), flattened row-major.
    """
    span = tile + 2 * radius
    n = (padded.shape[-2] - 2 * radius) // tile if count is None else count
    lead = padded.ndim - 3
    strip = jax.lax.dynamic_slice(  # [..., S, (n - 1) tile + S, D]
        padded,
        (0,) * lead + (row * tile, first_tile * tile, 0),
        padded.shape[:lead] + (span, (n - 1) * tile + span, padded.shape[-1]),
    )
    cols = np.arange(n)[:, None] * tile + np.arange(span)[None, :]  # [n, S]
    windows = jnp.moveaxis(strip[..., cols, :], -4, -3)  # [..., n, S, S, D]
    return windows.reshape(*windows.shape[:-3], span * span, windows.shape[-1])


def reference_windows(x: jax.Array, radius: int, tile: int) -> jax.Array:
    """Cuts the reference region each query tile can see, for every tile row at once.

    Args:
      x: [B, R, H, W, D] reference maps.

    Returns:
      [B, nTy, nTx, R, S*S, D] with S = tile + 2 radius; rows/cols outside the image are zeros.
    """
    padded = pad_for_windows(x, radius, tile)
    rows = [row_windows(padded, y, radius, tile) for y in range(num_tiles(x.shape[2], tile))]
    return jnp.stack(rows, axis=1).transpose(0, 1, 3, 2, 4, 5)  # [B, R, nTy, nTx, K, D] -> [B, nTy, nTx, R, K, D]


def window_logits(query: jax.Array, keys: jax.Array, allowed: jax.Array, temperature: float) -> jax.Array:
    """Affinities of query tiles to their reference windows, masked.

    Args:
      query: [..., Q, C] query tiles (Q = tile^2).
      keys: [..., R, K, C] their references' windows (K = S^2).
      allowed: bool, broadcastable to [..., Q, R, K]; False entries get `MASKED_LOGIT`.
      temperature: the affinities are <query, key> / temperature.

    Returns:
      [..., Q, R, K] float logits.
    """
    # One plain batched matrix product over the R*K keys (a 4-D output makes XLA's CPU dot ~1.6x
    # slower), then the [R, K] view.
    flat = jnp.einsum("...qc,...nc->...qn", query, keys.reshape(*keys.shape[:-3], -1, keys.shape[-1]))
    logits = flat.reshape(*flat.shape[:-1], *keys.shape[-3:-1]) / temperature
    return jnp.where(allowed, logits, MASKED_LOGIT)


def window_distance(radius: int, tile: int, window: str = "square") -> np.ndarray:
    """Distance between each query of a tile and each key of its window, [tile^2, S^2] float32.

    'square': Chebyshev distance (a key is in the window when it is <= radius);
    'disk': Euclidean distance plus a hair, so that `<= radius` keeps exactly the keys at
    Euclidean distance < radius (the CRW convention).
    """
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    span = tile + 2 * radius
    d = (np.arange(span) - radius)[None, :] - np.arange(tile)[:, None]  # [tile, S]
    dy, dx = d[:, None, :, None], d[None, :, None, :]
    if window == "square":
        distance = np.maximum(np.abs(dy), np.abs(dx)).astype(np.float32)
    else:
        distance = np.sqrt(dy**2 + dx**2).astype(np.float32) + 1e-3
    return distance.reshape(tile * tile, span * span)


def inside_image(height: int, width: int, radius: int, tile: int) -> np.ndarray:
    """[nTy, nTx, S^2] bool: whether each window key of each tile lies inside the image."""
    span = tile + 2 * radius
    k = np.arange(span) - radius
    rows = np.arange(num_tiles(height, tile))[:, None] * tile + k[None, :]
    cols = np.arange(num_tiles(width, tile))[:, None] * tile + k[None, :]
    row_in, col_in = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
    inside = row_in[:, None, :, None] & col_in[None, :, None, :]
    return inside.reshape(row_in.shape[0], col_in.shape[0], span * span)


def local_reconstruct(
    query: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    *,
    radius: int,
    temperature: float,
    tile: int,
    ref_fusion: str = "joint",
    pixel_radius: jax.Array | None = None,
) -> jax.Array:
    """Reconstructs the target's values from the references through local affinities.

    a_ij = <query_i, key_j> / temperature for reference pixels j within Chebyshev distance
    `radius` (or `pixel_radius[i]` <= radius) of i; weights are softmax(a_i.) jointly over all
    references ('joint'), or per reference with the per-pixel median of the R reconstructions
    taken afterwards ('median').

    Args:
      query: [B, H, W, C] target features.
      keys: [B, R, H, W, C] reference features.
      values: [B, R, H, W, V] reference values (colours or soft labels).
      radius: window radius (the window is (2 radius + 1)^2).
      temperature: softmax temperature.
      tile: query tile side; any positive value gives the same result, it only trades memory
        (B H W R (tile + 2 radius)^2 logits) against redundant work.
      ref_fusion: 'joint' or 'median'.
      pixel_radius: optional [B, H, W] int per-pixel radii (each <= radius).

    Returns:
      [B, H, W, V] reconstruction.
    """
    if ref_fusion not in REF_FUSIONS:
        raise ValueError(f"ref_fusion must be one of {REF_FUSIONS}, got {ref_fusion!r}")
    logits, v = _local_logits(query, keys, values, radius, temperature, tile, pixel_radius)
    if ref_fusion == "joint":
        weights = jax.nn.softmax(logits.reshape(*logits.shape[:4], -1), axis=-1)
        out = jnp.einsum("byxqk,byxkv->byxqv", weights, v.reshape(*v.shape[:3], -1, v.shape[-1]))
    else:
        weights = jax.nn.softmax(logits, axis=-1)
        per_ref = jnp.einsum("byxqrk,byxrkv->byxqrv", weights, v)
        out = jnp.median(per_ref, axis=-2) if keys.shape[1] > 1 else per_ref[..., 0, :]
    return untile_queries(out, *query.shape[1:3], tile)


def _local_logits(query, keys, values, radius, temperature, tile, pixel_radius):
    """Masked tiled logits [B, nTy, nTx, Q, R, K] and value windows [B, nTy, nTx, R, K, V]."""
    if query.shape[0] != keys.shape[0] or query.shape[1:] != keys.shape[2:]:
        raise ValueError(f"query {query.shape} and keys {keys.shape} must be [B,H,W,C] and [B,R,H,W,C]")
    if keys.shape[:4] != values.shape[:4]:
        raise ValueError(f"keys {keys.shape} and values {values.shape} must share [B, R, H, W]")
    h, w = query.shape[1:3]
    distance, inside = window_distance(radius, tile), inside_image(h, w, radius, tile)
    q = tile_queries(query, tile)  # [B, nTy, nTx, Q, C]
    k = reference_windows(keys, radius, tile)  # [B, nTy, nTx, R, K, C]
    v = reference_windows(values, radius, tile)  # [B, nTy, nTx, R, K, V]
    if pixel_radius is None:
        allowed = jnp.asarray((distance <= radius)[None, None] & inside[:, :, None, :])
        allowed = allowed[None, :, :, :, None, :]  # [1, nTy, nTx, Q, 1, K]
    else:
        r_tiles = tile_queries(jnp.minimum(pixel_radius, radius)[..., None], tile)  # [B, nTy, nTx, Q, 1]
        allowed = (distance[None, None, None] <= r_tiles) & inside[None, :, :, None, :]
        allowed = allowed[:, :, :, :, None, :]
    return window_logits(q, k, allowed, temperature), v


class PositiveNegative(NamedTuple):
    """Reconstructions with a memory bank of negatives (docs/method.md, 'Reconstruction and losses')."""

    positive: jax.Array  # [B, H, W, V] reconstruction from the local windows only
    joint: jax.Array  # [B, H, W, V] reconstruction with the negatives in the softmax
    log_positive_mass: jax.Array  # [B, H, W] log of the softmax mass on the positives


def local_reconstruct_with_negatives(
    query: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    negative_keys: jax.Array,
    negative_values: jax.Array,
    negative_valid: jax.Array,
    *,
    radius: int,
    temperature: float,
    tile: int,
    pixel_radius: jax.Array | None = None,
    positive: str = "window",
) -> PositiveNegative:
    """Joint softmax over each pixel's local windows and a set of negatives.

    Args:
      query, keys, values, radius, temperature, tile, pixel_radius: as `local_reconstruct`.
      negative_keys: [B, M, C] negatives of each target frame (other videos' pixels).
      negative_values: [B, M, V] their values.
      negative_valid: [B, M] bool; invalid negatives are left out of the softmax.
      positive: which entries of the joint softmax are positives: 'window' (every pixel of the
        local windows) or 'best' (the single window pixel of highest affinity, the paper's
        reading of one positive per query).

    Returns:
      PositiveNegative: the positive-only reconstruction (equal to `local_reconstruct`), the
      joint one, and the log probability mass on the positives.
    """
    if positive not in POSITIVES:
        raise ValueError(f"positive must be one of {POSITIVES}, got {positive!r}")
    logits, v = _local_logits(query, keys, values, radius, temperature, tile, pixel_radius)
    positive_logits = logits.reshape(*logits.shape[:4], -1)  # [B, nTy, nTx, Q, R*K]
    q = tile_queries(query, tile)
    negative = jnp.einsum("byxqc,bmc->byxqm", q, negative_keys) / temperature
    negative = jnp.where(negative_valid[:, None, None, None, :], negative, MASKED_LOGIT)
    lse_positive = jax.nn.logsumexp(positive_logits, axis=-1, keepdims=True)
    lse_joint = jnp.logaddexp(lse_positive, jax.nn.logsumexp(negative, axis=-1, keepdims=True))
    v = v.reshape(*v.shape[:3], -1, v.shape[-1])
    positive_recon = jnp.einsum("byxqk,byxkv->byxqv", jnp.exp(positive_logits - lse_positive), v)
    joint_recon = jnp.einsum("byxqk,byxkv->byxqv", jnp.exp(positive_logits - lse_joint), v) + jnp.einsum(
        "byxqm,bmv->byxqv", jnp.exp(negative - lse_joint), negative_values
    )
    h, w = query.shape[1:3]
    top = lse_positive if positive == "window" else jnp.max(positive_logits, axis=-1, keepdims=True)
    return PositiveNegative(
        untile_queries(positive_recon, h, w, tile),
        untile_queries(joint_recon, h, w, tile),
        untile_queries(top - lse_joint, h, w, tile)[..., 0],
    )
