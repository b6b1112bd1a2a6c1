"""The Value Extraction Network (docs/method.md, 'Value Extraction Network').

`window_value_map` scores each target window by how much it moved relative to the references;
`ValueExtractionNetwork` refines the target features by multi-head attention over average-pooled
reference features (`multi_head_attention`), with a 2-D sinusoidal position encoding
(`sincos_position_encoding`), query chunking, an optional local radius and DropKey
(`dropkey_mask`, `attention_mask`).
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mer_jax import feature_maps

_VALUE_EPS = 1e-6
# The value map's raw scores are cosine differences. A frame whose best window scores below this
# counts as still: the float32 rounding of S - Z on a still frame (about 1e-7) is not normalised
# up towards 1.
_VALUE_FLOOR = 1e-3


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
    sums = feature_maps.block_sums(features, window)  # [..., rows, cols, C]
    # Normalising makes the sum and the mean the same descriptor, so zero padding gives a border
    # window the mean of its valid pixels.
    norm_sq = jnp.sum(sums**2, axis=-1, keepdims=True)
    descriptors = sums * jax.lax.rsqrt(jnp.maximum(norm_sq, _VALUE_EPS**2))
    return descriptors.reshape(*descriptors.shape[:-3], -1, descriptors.shape[-1])


def scaled_window(window: int, grid_reference: int, height: int, width: int) -> int:
    """The value map's window side on an h x w feature grid, in feature pixels.

    With `grid_reference` 0 the window is taken as given. Otherwise it is meant for a
    grid_reference x grid_reference grid (the paper's 8 for the 64x64 grid of 256x256 frames: 8
    windows per side) and scales with the grid's shorter side: max(1, round(window * min(h, w) /
    grid_reference)), rounding half to even (as the sampler's radii, `sampler.radius_limits`).
    """
    if grid_reference < 0:
        raise ValueError(f"grid_reference must be a grid side, or 0 for a window in feature pixels: {grid_reference}")
    if grid_reference == 0:
        return window
    return max(1, round(window * min(height, width) / grid_reference))


def window_value_map(
    target: jax.Array, refs: jax.Array, window: int, beta: float, grid_reference: int = 0
) -> jax.Array:
    """Potential value map P: high where the target moved.

    The window side is `scaled_window(window, grid_reference, h, w)`. Windows tile the grid from
    the top-left; when h or w is not a multiple of the window, the last row/column of windows is
    partial and its descriptor is the mean of its valid pixels. For target window i, S_i = mean_r
    max_j cos(t_i, r_j) over all windows j of ref r, Z_i = mean_r cos(t_i, r_i), and
    P_i = relu(S_i - beta Z_i) / max(max_i relu(S_i - beta Z_i), 1e-3) per frame (a frame that
    scores below 1e-3 everywhere is still). P is
    differentiable with respect to the features. A perfectly static window has S = Z, so it scores
    (1 - beta) Z before the per-frame normalisation: 0 with beta = 1, where P measures how much
    better the window is matched elsewhere than where it stood (S >= Z always).

    Args:
      target: [B, h, w, C] target features.
      refs: [B, R, h, w, C] reference features.
      window: window side in feature pixels (for a grid_reference-sided grid if that is not 0).
      beta: weight of the same-place similarity Z.
      grid_reference: the grid side `window` is meant for, or 0 for a window in feature pixels.

    Returns:
      [B, h, w] P in [0, 1], constant on each window (nearest upsampling).
    """
    if target.ndim != 4 or refs.ndim != 5 or refs.shape[0] != target.shape[0] or refs.shape[2:] != target.shape[1:]:
        raise ValueError(f"need target [B, h, w, C] and refs [B, R, h, w, C], got {target.shape} and {refs.shape}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    batch, h, w, _ = target.shape
    window = scaled_window(window, grid_reference, h, w)
    t = _window_descriptors(target, window)  # [B, n, C]
    r = _window_descriptors(refs, window)  # [B, R, n, C]
    cos = jnp.einsum("bic,brjc->brij", t, r)
    seen_anywhere = cos.max(axis=-1).mean(axis=1)  # [B, n]
    seen_in_place = jnp.einsum("bic,bric->bri", t, r).mean(axis=1)
    raw = nn.relu(seen_anywhere - beta * seen_in_place)
    value = raw / jnp.maximum(raw.max(axis=-1, keepdims=True), _VALUE_FLOOR)
    grid = value.reshape(batch, -(-h // window), -(-w // window))
    return jnp.repeat(jnp.repeat(grid, window, axis=1), window, axis=2)[:, :h, :w]


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


def attention_mask(
    query_index: jax.Array,
    query_cells: jax.Array,
    key_cells: jax.Array,
    *,
    shape: tuple[int, int, int, int],
    radius: int | None,
    drop_rng: jax.Array | None,
    drop_rate: float,
) -> jax.Array | None:
    """Which keys each query of a chunk attends to: the radius, then DropKey.

    Query i's DropKey row is `dropkey_mask(fold_in(drop_rng, i), [B, heads, Nk], drop_rate)`, so
    the mask depends neither on the chunking nor on the attention kernel, and only one chunk's
    mask exists at a time. A query whose every allowed key is dropped keeps them all (its softmax
    stays defined).

    Args:
      query_index: [chunk] int index of each query in the whole sequence.
      query_cells: [chunk, 2] int pooled-grid (row, col) of each query.
      key_cells: [Nk, 2] int pooled-grid (row, col) of each key.
      shape: (B, heads, chunk, Nk), the logits' shape.
      radius: a query sees only keys within this Chebyshev distance of its cell; None sees all.
      drop_rng: DropKey key, or None for no DropKey.
      drop_rate: DropKey probability.

    Returns:
      bool mask broadcastable to `shape`, True where a logit is kept; None when all are kept.
    """
    allowed = None
    if radius is not None:
        distance = jnp.abs(query_cells[:, None, :] - key_cells[None]).max(axis=-1)
        allowed = (distance <= radius)[None, None]  # [1, 1, chunk, Nk]
    if drop_rng is not None:
        batch, heads, _, num_keys = shape
        row_rngs = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(drop_rng, query_index)
        dropped = jax.vmap(lambda rng: dropkey_mask(rng, (batch, heads, num_keys), drop_rate), out_axes=2)(row_rngs)
        base = jnp.ones(shape, bool) if allowed is None else jnp.broadcast_to(allowed, shape)
        kept = ~dropped & base
        allowed = jnp.where(kept.any(axis=-1, keepdims=True), kept, base)
    return allowed


def _einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, scale: float) -> jax.Array:
    """softmax(q k^T scale) v as three explicit steps: [B, Nq, heads, d] queries -> [B, Nq, heads, d]."""
    # Logits and softmax in float32 even when q, k, v are bfloat16.
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1).astype(v.dtype), v)


def _fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, scale: float) -> jax.Array:
    """The same through `jax.nn.dot_product_attention`, with JAX's choice of implementation.

    JAX 0.10.2 chooses XLA on every backend (cuDNN only when asked for, and then only for
    bfloat16 or float16). The XLA implementation also takes float32 logits and softmax and
    casts the probabilities to v's dtype; it masks with a large finite negative instead of -inf,
    which is the same softmax as long as every query keeps a key (`attention_mask` ensures it).
    """
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)


# `ValueExtractionNetwork.attention`: the kernel each query chunk runs.
ATTENTION_KERNELS = {"chunked": _einsum_attention, "fused": _fused_attention}


def multi_head_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    attention: str,
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
      attention: the kernel each chunk runs, a key of ATTENTION_KERNELS.
      chunk: queries per chunk.
      query_cells: [Nq, 2] int pooled-grid (row, col) of each query.
      key_cells: [Nk, 2] int pooled-grid (row, col) of each key.
      radius: a query sees only keys within this Chebyshev distance of its cell; None sees all.
      drop_rng: DropKey key, or None for no DropKey.
      drop_rate: DropKey probability.

    Returns:
      [B, Nq, heads, d] attended values.
    """
    if attention not in ATTENTION_KERNELS:
        raise ValueError(f"unknown attention {attention!r}; known: {sorted(ATTENTION_KERNELS)}")
    kernel = ATTENTION_KERNELS[attention]
    batch, num_queries, heads, dim = q.shape
    num_keys = k.shape[1]
    chunk = min(chunk, num_queries)
    num_chunks = -(-num_queries // chunk)
    pad = num_chunks * chunk - num_queries
    q_chunks = jnp.pad(q, [(0, 0), (0, pad), (0, 0), (0, 0)]).reshape(batch, num_chunks, chunk, heads, dim)
    cell_chunks = np.pad(query_cells, [(0, pad), (0, 0)], mode="edge").reshape(num_chunks, chunk, 2)
    index_chunks = np.arange(num_chunks * chunk, dtype=np.int32).reshape(num_chunks, chunk)

    # Rematerialised in the backward pass, so training never stores more than one chunk's logits
    # (both kernels' XLA implementations keep the probabilities for the backward pass).
    @jax.checkpoint
    def attend(q_chunk, cells, index, k, v):
        mask = attention_mask(
            index,
            cells,
            jnp.asarray(key_cells),
            shape=(batch, heads, chunk, num_keys),
            radius=radius,
            drop_rng=drop_rng,
            drop_rate=drop_rate,
        )
        return kernel(q_chunk, k, v, mask, dim**-0.5)

    out = jax.lax.map(
        lambda xs: attend(*xs, k, v),
        (q_chunks.swapaxes(0, 1), jnp.asarray(cell_chunks), jnp.asarray(index_chunks)),
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
    """VEN: f~_t = f_t + W_o(attention(W_q(f_t + E), W_k(f_r + PE), W_v(f_r))).

    E = MLP(P) + PE with P the potential value map (kept differentiable: it is computed from the
    features) and PE the 2-D sinusoidal encoding at full feature resolution. Keys and
    values are average-pooled by `kv_pool`; since the projections are affine, pooling their inputs
    (f_r + PE and f_r, so PE is pooled along with the features) equals pooling K and V. Keys of all
    refs are concatenated. Queries are processed `query_chunk` at a time with `jax.lax.map`.

    Attributes:
      num_heads: attention heads; C must be divisible by it.
      kv_pool: average-pooling factor of keys and values.
      query_chunk: queries per chunk (bounds memory to chunk x keys logits).
      attention: each chunk's kernel, a key of ATTENTION_KERNELS: 'fused'
        (`jax.nn.dot_product_attention`) or 'chunked' (einsum, softmax, einsum); the same result,
        DropKey included.
      radius: if set, a query at feature pixel (y, x) attends only to pooled keys whose pooled cell
        is within this Chebyshev distance of (y // kv_pool, x // kv_pool) in every ref; the
        logits are still computed densely per chunk and masked. None is global attention.
      dropkey_rate: DropKey probability in training (uses the 'dropkey' rng stream).
      window, beta, grid_reference: the value map's (`window_value_map`).
      zero_init_out: initialise the output projection W_o to zero, so the VEN starts as the
        identity (f~_t = f_t) and its addition grows only as far as training finds it useful.
      dtype: computation dtype of the projections and attention products (e.g. bfloat16); the
        value map, attention softmax and the returned features are float32.
    """

    num_heads: int = 4
    kv_pool: int = 2
    query_chunk: int = 1024
    attention: str = "fused"
    radius: int | None = None
    dropkey_rate: float = 0.1
    window: int = 8
    beta: float = 0.6
    grid_reference: int = 0
    zero_init_out: bool = True
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
        value_map = window_value_map(target, refs, self.window, self.beta, self.grid_reference)
        pos = sincos_position_encoding(h, w, c).astype(target.dtype)
        hidden = nn.relu(nn.Dense(c, dtype=self.dtype, name="value_mlp_hidden")(value_map[..., None]))
        embedding = nn.Dense(c, dtype=self.dtype, name="value_mlp_out")(hidden) + pos
        head_dim = c // self.num_heads
        q = nn.Dense(c, dtype=self.dtype, name="query")(target + embedding).reshape(
            batch, h * w, self.num_heads, head_dim
        )
        # No key bias: it adds the same q.b to every logit of a query, so the softmax ignores it
        # (its gradient is pure rounding noise, which Adam would amplify into random updates).
        k = nn.Dense(c, use_bias=False, dtype=self.dtype, name="key")(
            feature_maps.average_pool(refs + pos, self.kv_pool)
        )
        v = nn.Dense(c, dtype=self.dtype, name="value")(feature_maps.average_pool(refs, self.kv_pool))
        _, num_refs, rows, cols, _ = k.shape
        k = k.reshape(batch, num_refs * rows * cols, self.num_heads, head_dim)
        v = v.reshape(batch, num_refs * rows * cols, self.num_heads, head_dim)

        query_cells = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)
        key_cells = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1).reshape(-1, 2)
        use_dropkey = train and self.dropkey_rate > 0
        attended = multi_head_attention(
            q,
            k,
            v,
            attention=self.attention,
            chunk=self.query_chunk,
            query_cells=(query_cells // self.kv_pool).astype(np.int32),
            key_cells=np.tile(key_cells, (num_refs, 1)).astype(np.int32),
            radius=self.radius,
            drop_rng=self.make_rng("dropkey") if use_dropkey else None,
            drop_rate=self.dropkey_rate,
        )
        out_init = nn.initializers.zeros if self.zero_init_out else nn.linear.default_kernel_init
        out = nn.Dense(c, kernel_init=out_init, dtype=self.dtype, name="out")(attended.reshape(batch, h, w, c))
        return VENOutput((target + out).astype(jnp.float32), value_map)
