"""MER's Motion Enhancement Engine (spec section 3): flow fusion and the Value Extraction Network.

`FlowFusion` superimposes optical flow on the input frames (O = I + alpha * G(F)), either as the
Middlebury colour-wheel flow image in normalised Lab (`flow_to_color`) or through a learnable 1x1
conv. `ValueExtractionNetwork` scores each target window by how much it moved (`window_value_map`)
and refines the target features by multi-head attention over average-pooled reference features,
with a 2-D sinusoidal position encoding (`sincos_position_encoding`), query chunking, an optional
local radius and DropKey (`dropkey_mask`).
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mer_jax import color

FLOW_ENCODINGS = ("color", "conv")
_FLOW_EPS = 1e-5
_VALUE_EPS = 1e-6
_OUT_OF_RANGE_SCALE = 0.75  # Middlebury darkens flow beyond the maximum radius.
# Colour-wheel segments of Baker et al. (2011): (number of hues, start RGB, end RGB).
_WHEEL_SEGMENTS = (
    (15, (1.0, 0.0, 0.0), (1.0, 1.0, 0.0)),  # red -> yellow
    (6, (1.0, 1.0, 0.0), (0.0, 1.0, 0.0)),  # yellow -> green
    (4, (0.0, 1.0, 0.0), (0.0, 1.0, 1.0)),  # green -> cyan
    (11, (0.0, 1.0, 1.0), (0.0, 0.0, 1.0)),  # cyan -> blue
    (13, (0.0, 0.0, 1.0), (1.0, 0.0, 1.0)),  # blue -> magenta
    (6, (1.0, 0.0, 1.0), (1.0, 0.0, 0.0)),  # magenta -> red
)


def _color_wheel() -> np.ndarray:
    """[55, 3] float32 RGB hues in [0, 1]; entry k sits at angle 2 pi k / 55."""
    parts = []
    for count, start, end in _WHEEL_SEGMENTS:
        steps = np.arange(count, dtype=np.float64)[:, None] / count
        parts.append(np.asarray(start) + (np.asarray(end) - np.asarray(start)) * steps)
    return np.concatenate(parts).astype(np.float32)


_COLOR_WHEEL = _color_wheel()


def flow_to_color(flow: jax.Array, max_radius: float | None = None) -> jax.Array:
    """Middlebury colour-wheel image of optical flow (Baker et al., 2011).

    Hue follows the flow angle atan2(dy, dx) in image coordinates (y down): +x is red, +y orange,
    -x light blue, -y violet. The 55 wheel hues are spread evenly over the full circle and
    interpolated linearly with wrap-around (the reference code spreads them over 54 intervals, so
    hues differ from it by less than one wheel step). Saturation is the magnitude divided by
    `max_radius`: zero flow is white, flow at `max_radius` is the pure hue, and flow beyond it is
    the pure hue darkened by 0.75.

    Args:
      flow: [..., H, W, 2] flow (dx, dy) in pixels.
      max_radius: magnitude that maps to full saturation; None uses each image's own maximum
        magnitude + 1e-5, so every image spans the full saturation range.

    Returns:
      [..., H, W, 3] float32 RGB in [0, 1].
    """
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be [..., H, W, 2], got shape {flow.shape}")
    if max_radius is not None and max_radius <= 0:
        raise ValueError(f"max_radius must be positive, got {max_radius}")
    flow = jnp.asarray(flow, jnp.float32)
    dx, dy = flow[..., 0], flow[..., 1]
    magnitude = jnp.sqrt(dx**2 + dy**2)
    if max_radius is None:
        max_radius = jnp.max(magnitude, axis=(-2, -1), keepdims=True) + _FLOW_EPS
    radius = (magnitude / max_radius)[..., None]
    num_hues = _COLOR_WHEEL.shape[0]
    position = (jnp.arctan2(dy, dx) / (2.0 * jnp.pi)) % 1.0 * num_hues
    lower = jnp.floor(position)
    frac = (position - lower)[..., None]
    # `% 1.0` can round up to exactly 1.0 for tiny negative angles, hence the modulo on the index.
    index = lower.astype(jnp.int32) % num_hues
    wheel = jnp.asarray(_COLOR_WHEEL)
    hue = (1.0 - frac) * wheel[index] + frac * wheel[(index + 1) % num_hues]
    return jnp.where(radius <= 1.0, 1.0 - radius * (1.0 - hue), _OUT_OF_RANGE_SCALE * hue)


class FlowFusion(nn.Module):
    """Fuses flow into the frames: O = I + alpha * G(F), alpha a learnable scalar param 'alpha'.

    Attributes:
      encoding: 'color' (G = colour-wheel flow image converted to normalised Lab like a frame) or
        'conv' (G = learnable bias-free 1x1 conv 2 -> 3, param 'flow_conv', of (dx / W, dy / H)).
      lab_mean: Lab normalisation mean of the frames, e.g. (50, 0, 0).
      lab_std: Lab normalisation std of the frames, e.g. (50, 127, 127).
      alpha_init: initial value of alpha.
    """

    encoding: str
    lab_mean: tuple[float, ...]
    lab_std: tuple[float, ...]
    alpha_init: float = 0.1

    @nn.compact
    def __call__(self, frames: jax.Array, flow: jax.Array) -> jax.Array:
        """Adds the encoded flow to the frames.

        Args:
          frames: [B, H, W, 3] normalised Lab frames (any leading dims).
          flow: [B, H, W, 2] flow (dx, dy) in pixels, same leading dims as `frames`.

        Returns:
          [B, H, W, 3] fused frames.
        """
        if self.encoding not in FLOW_ENCODINGS:
            raise ValueError(f"encoding must be one of {FLOW_ENCODINGS}, got {self.encoding!r}")
        if frames.ndim < 3 or frames.shape[-1] != 3 or flow.shape != (*frames.shape[:-1], 2):
            raise ValueError(f"need frames [..., H, W, 3] and flow [..., H, W, 2], got {frames.shape} and {flow.shape}")
        alpha = self.param("alpha", nn.initializers.constant(self.alpha_init), (), jnp.float32)
        if self.encoding == "color":
            encoded = color.normalize_lab(color.rgb_to_lab(flow_to_color(flow)), self.lab_mean, self.lab_std)
        else:
            height, width = frames.shape[-3:-1]
            scaled = flow / jnp.asarray([width, height], flow.dtype)
            # A 1x1 conv is a Dense layer on the channel axis.
            encoded = nn.Dense(3, use_bias=False, name="flow_conv")(scaled)
        return frames + alpha * encoded.astype(frames.dtype)


def sincos_position_encoding(height: int, width: int, dim: int) -> jax.Array:
    """2-D sinusoidal position encoding of integer grid positions (Transformer style).

    With q = dim / 4 and frequencies w_k = 10000^(-k / q), k = 0..q-1, the channels are
    [sin(y w), cos(y w), sin(x w), cos(x w)] (q channels each), y the row and x the column index.

    Args:
      height: grid rows.
      width: grid columns.
      dim: channels; must be divisible by 4.

    Returns:
      [height, width, dim] float32 encoding.
    """
    if dim % 4 != 0 or dim <= 0:
        raise ValueError(f"dim must be a positive multiple of 4, got {dim}")
    quarter = dim // 4
    freqs = 10000.0 ** (-jnp.arange(quarter, dtype=jnp.float32) / quarter)
    y = jnp.arange(height, dtype=jnp.float32)[:, None] * freqs  # [height, q]
    x = jnp.arange(width, dtype=jnp.float32)[:, None] * freqs  # [width, q]
    y_enc = jnp.concatenate([jnp.sin(y), jnp.cos(y)], axis=-1)[:, None, :]
    x_enc = jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)[None, :, :]
    return jnp.concatenate(
        [jnp.broadcast_to(y_enc, (height, width, dim // 2)), jnp.broadcast_to(x_enc, (height, width, dim // 2))],
        axis=-1,
    )


def _window_descriptors(features: jax.Array, window: int) -> jax.Array:
    """L2-normalised mean feature of each window x window window.

    Args:
      features: [..., h, w, C]; h and w need not be multiples of `window`.
      window: window side.

    Returns:
      [..., ceil(h / window) * ceil(w / window), C] descriptors, windows in raster order.
    """
    *lead, h, w, c = features.shape
    rows, cols = -(-h // window), -(-w // window)
    pad = [(0, 0)] * len(lead) + [(0, rows * window - h), (0, cols * window - w), (0, 0)]
    sums = jnp.pad(features, pad).reshape(*lead, rows, window, cols, window, c).sum(axis=(-4, -2))
    # Normalising makes the sum and the mean the same descriptor, so zero padding gives a border
    # window the mean of its valid pixels.
    norm_sq = jnp.sum(sums**2, axis=-1, keepdims=True)
    return (sums * jax.lax.rsqrt(jnp.maximum(norm_sq, _VALUE_EPS**2))).reshape(*lead, rows * cols, c)


def window_value_map(target: jax.Array, refs: jax.Array, window: int, beta: float) -> jax.Array:
    """Potential value map P of spec 3 (steps 1-2): high where the target moved.

    Windows tile the grid from the top-left; when h or w is not a multiple of `window`, the last
    row/column of windows is partial and its descriptor is the mean of its valid pixels. For target
    window i, S_i = mean_r max_j cos(t_i, r_j) over all windows j of ref r, Z_i = mean_r
    cos(t_i, r_i), and P_i = relu(S_i - beta Z_i) / (max_i relu(S_i - beta Z_i) + 1e-6) per frame.
    P is differentiable with respect to the features. A perfectly static window has S = Z, so it
    scores (1 - beta) before the per-frame normalisation.

    Args:
      target: [B, h, w, C] target features.
      refs: [B, R, h, w, C] reference features.
      window: window side in feature pixels.
      beta: weight of the same-place similarity Z.

    Returns:
      [B, h, w] P in [0, 1], constant on each window (nearest upsampling).
    """
    if target.ndim != 4 or refs.ndim != 5 or refs.shape[0] != target.shape[0] or refs.shape[2:] != target.shape[1:]:
        raise ValueError(f"need target [B, h, w, C] and refs [B, R, h, w, C], got {target.shape} and {refs.shape}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    batch, h, w, _ = target.shape
    t = _window_descriptors(target, window)  # [B, n, C]
    r = _window_descriptors(refs, window)  # [B, R, n, C]
    cos = jnp.einsum("bic,brjc->brij", t, r)
    seen_anywhere = cos.max(axis=-1).mean(axis=1)  # [B, n]
    seen_in_place = jnp.einsum("bic,bric->bri", t, r).mean(axis=1)
    raw = nn.relu(seen_anywhere - beta * seen_in_place)
    value = raw / (raw.max(axis=-1, keepdims=True) + _VALUE_EPS)
    grid = value.reshape(batch, -(-h // window), -(-w // window))
    return jnp.repeat(jnp.repeat(grid, window, axis=1), window, axis=2)[:, :h, :w]


def _average_pool(x: jax.Array, pool: int) -> jax.Array:
    """Non-overlapping average pooling [..., h, w, C] -> [..., ceil(h/pool), ceil(w/pool), C].

    Border cells average only their valid pixels.
    """
    *lead, h, w, c = x.shape
    rows, cols = -(-h // pool), -(-w // pool)
    pad_h, pad_w = rows * pool - h, cols * pool - w
    sums = jnp.pad(x, [(0, 0)] * len(lead) + [(0, pad_h), (0, pad_w), (0, 0)])
    sums = sums.reshape(*lead, rows, pool, cols, pool, c).sum(axis=(-4, -2))
    counts = np.pad(np.ones((h, w), np.float32), [(0, pad_h), (0, pad_w)]).reshape(rows, pool, cols, pool).sum((1, 3))
    return sums / jnp.asarray(counts, x.dtype)[:, :, None]


def dropkey_mask(rng: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """DropKey mask: True where a logit is dropped, independently with probability `rate`.

    Args:
      rng: PRNG key.
      shape: logits shape, e.g. [B, heads, queries, keys].
      rate: drop probability in [0, 1].

    Returns:
      bool array of `shape`.
    """
    return jax.random.bernoulli(rng, rate, shape)


def _chunked_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    chunk: int,
    query_cells: np.ndarray,
    key_cells: np.ndarray,
    radius: int | None,
    drop_rng: jax.Array | None,
    drop_rate: float,
) -> jax.Array:
    """Multi-head softmax(q k^T / sqrt(d)) v over query chunks, with optional locality and DropKey.

    Args:
      q: [B, Nq, heads, d] queries.
      k: [B, Nk, heads, d] keys.
      v: [B, Nk, heads, d] values.
      chunk: queries per chunk.
      query_cells: [Nq, 2] int pooled-grid (row, col) of each query.
      key_cells: [Nk, 2] int pooled-grid (row, col) of each key.
      radius: a query sees only keys within this Chebyshev distance of its cell; None sees all.
      drop_rng: DropKey key, or None for no DropKey.
      drop_rate: DropKey probability.

    Returns:
      [B, Nq, heads, d] attended values.
    """
    batch, num_queries, heads, dim = q.shape
    chunk = min(chunk, num_queries)
    num_chunks = -(-num_queries // chunk)
    pad = num_chunks * chunk - num_queries
    q_chunks = jnp.pad(q, [(0, 0), (0, pad), (0, 0), (0, 0)]).reshape(batch, num_chunks, chunk, heads, dim)
    cell_chunks = np.pad(query_cells, [(0, pad), (0, 0)], mode="edge").reshape(num_chunks, chunk, 2)

    # Rematerialised in the backward pass, so training never stores more than one chunk's logits.
    @jax.checkpoint
    def attend(q_chunk, cells, index, k, v):
        # Logits and softmax in float32 even when q, k, v are bfloat16.
        logits = jnp.einsum("bqhd,bkhd->bhqk", q_chunk, k, preferred_element_type=jnp.float32) * dim**-0.5
        allowed = None
        if radius is not None:
            distance = jnp.abs(cells[:, None, :] - jnp.asarray(key_cells)[None]).max(axis=-1)
            allowed = jnp.broadcast_to(distance <= radius, logits.shape)
        if drop_rng is not None:
            kept = ~dropkey_mask(jax.random.fold_in(drop_rng, index), logits.shape, drop_rate)
            base = jnp.ones(logits.shape, bool) if allowed is None else allowed
            kept &= base
            # A query whose every key was dropped keeps them all, so its softmax stays defined.
            allowed = jnp.where(kept.any(axis=-1, keepdims=True), kept, base)
        if allowed is not None:
            logits = jnp.where(allowed, logits, -jnp.inf)
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1).astype(v.dtype), v)

    out = jax.lax.map(
        lambda xs: attend(*xs, k, v),
        (q_chunks.swapaxes(0, 1), jnp.asarray(cell_chunks), jnp.arange(num_chunks)),
    )
    return out.swapaxes(0, 1).reshape(batch, num_chunks * chunk, heads, dim)[:, :num_queries]


class VENOutput(NamedTuple):
    """Value Extraction Network output.

    Attributes:
      features: [B, h, w, C] refined target features f~_t.
      value_map: [B, h, w] potential value map P (differentiable; stop its gradient where it is
        used as a loss weight).
    """

    features: jax.Array
    value_map: jax.Array


class ValueExtractionNetwork(nn.Module):
    """VEN (spec 3, step 3): f~_t = f_t + W_o(attention(W_q(f_t + E), W_k(f_r + PE), W_v(f_r))).

    E = MLP(P) + PE with P the potential value map (kept differentiable, as the spec computes it
    from the features) and PE the 2-D sinusoidal encoding at full feature resolution. Keys and
    values are average-pooled by `kv_pool`; since the projections are affine, pooling their inputs
    (f_r + PE and f_r, so PE is pooled along with the features) equals pooling K and V. Keys of all
    refs are concatenated. Queries are processed `query_chunk` at a time with `jax.lax.map`.

    Attributes:
      num_heads: attention heads; C must be divisible by it.
      kv_pool: average-pooling factor of keys and values.
      query_chunk: queries per chunk (bounds memory to chunk x keys logits).
      radius: if set, a query at feature pixel (y, x) attends only to pooled keys whose pooled cell
        is within this Chebyshev distance of (y // kv_pool, x // kv_pool) in every ref; the
        logits are still computed densely per chunk and masked. None is global attention.
      dropkey_rate: DropKey probability in training (uses the 'dropkey' rng stream).
      window: window side of the value map.
      beta: weight of the same-place similarity in the value map.
      dtype: computation dtype of the projections and attention products (e.g. bfloat16); the
        value map, attention softmax and the returned features are float32.
    """

    num_heads: int = 4
    kv_pool: int = 2
    query_chunk: int = 1024
    radius: int | None = None
    dropkey_rate: float = 0.1
    window: int = 8
    beta: float = 0.6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, target: jax.Array, refs: jax.Array, *, train: bool) -> VENOutput:
        """Refines the target features by attention over the reference features.

        Args:
          target: [B, h, w, C] target features f_t; C divisible by 4 and by `num_heads`.
          refs: [B, R, h, w, C] reference features f_r.
          train: enables DropKey.

        Returns:
          VENOutput(features [B, h, w, C], value_map [B, h, w]).
        """
        if target.ndim != 4 or refs.ndim != 5 or refs.shape[0] != target.shape[0] or refs.shape[2:] != target.shape[1:]:
            raise ValueError(f"need target [B, h, w, C] and refs [B, R, h, w, C], got {target.shape} and {refs.shape}")
        batch, h, w, c = target.shape
        if c % self.num_heads != 0:
            raise ValueError(f"channels {c} must be divisible by num_heads {self.num_heads}")
        if self.kv_pool < 1 or self.query_chunk < 1 or (self.radius is not None and self.radius < 0):
            raise ValueError(
                f"need kv_pool, query_chunk >= 1, radius >= 0; got {self.kv_pool}, {self.query_chunk}, {self.radius}"
            )
        value_map = window_value_map(target, refs, self.window, self.beta)
        pos = sincos_position_encoding(h, w, c).astype(target.dtype)
        hidden = nn.relu(nn.Dense(c, dtype=self.dtype, name="value_mlp_hidden")(value_map[..., None]))
        embedding = nn.Dense(c, dtype=self.dtype, name="value_mlp_out")(hidden) + pos
        head_dim = c // self.num_heads
        q = nn.Dense(c, dtype=self.dtype, name="query")(target + embedding).reshape(
            batch, h * w, self.num_heads, head_dim
        )
        # No key bias: it adds the same q.b to every logit of a query, so the softmax ignores it
        # (its gradient is pure rounding noise, which Adam would amplify into random updates).
        k = nn.Dense(c, use_bias=False, dtype=self.dtype, name="key")(_average_pool(refs + pos, self.kv_pool))
        v = nn.Dense(c, dtype=self.dtype, name="value")(_average_pool(refs, self.kv_pool))
        _, num_refs, rows, cols, _ = k.shape
        k = k.reshape(batch, num_refs * rows * cols, self.num_heads, head_dim)
        v = v.reshape(batch, num_refs * rows * cols, self.num_heads, head_dim)

        query_cells = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)
        key_cells = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1).reshape(-1, 2)
        use_dropkey = train and self.dropkey_rate > 0
        attended = _chunked_attention(
            q,
            k,
            v,
            chunk=self.query_chunk,
            query_cells=(query_cells // self.kv_pool).astype(np.int32),
            key_cells=np.tile(key_cells, (num_refs, 1)).astype(np.int32),
            radius=self.radius,
            drop_rng=self.make_rng("dropkey") if use_dropkey else None,
            drop_rate=self.dropkey_rate,
        )
        out = nn.Dense(c, dtype=self.dtype, name="out")(attended.reshape(batch, h, w, c))
        return VENOutput((target + out).astype(jnp.float32), value_map)
