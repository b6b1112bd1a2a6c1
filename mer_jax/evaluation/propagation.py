"""Label propagation through feature affinities (spec section 6), shared by every benchmark.

Each frame's features are computed once and cached on the device; frame t's soft labels are
reconstructed from its reference frames' (already propagated) soft labels through a local
softmax over the references' windows, optionally restricted to the top-k affinities and
sharpened by a compactness prior. The work is tiled and processed one row of tiles at a time
(`lax.map`), so memory is bounded by one row of windows whatever the frame size.
"""

import dataclasses
from typing import Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from mer_jax import correspondence

_MASKED = -1e30
CONTEXTS = ("mer", "crw")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Every number of a propagation protocol (see configs/davis.py for the two presets).

    Attributes:
      context: 'mer' (long-term frames + short-term frames picked by image similarity) or 'crw'
        (first frame + the `crw_context` previous frames).
      radius: window radius in feature pixels.
      window: 'square' (Chebyshev <= radius) or 'disk' (Euclidean < radius).
      temperature: softmax temperature of the affinities.
      topk: keep only the k largest affinities per pixel (0: all).
      normalize: L2-normalise the features before the dot product.
      long_term: absolute frame indices used as references once they precede t ('mer').
      short_term: how many short-term references ('mer').
      short_term_search: they are picked among t-1 .. t-short_term_search ('mer').
      short_term_blur: Gaussian sigma (stride-4 pixels) of the images compared by MSE ('mer').
      crw_context: previous frames used as references besides the first ('crw').
      compactness: apply the compactness prior.
      compactness_topk, compactness_sigma, compactness_min_prob: the prior multiplies each
        weight by a Gaussian (sigma in feature pixels) of its distance to the nearest of the
        `compactness_topk` best matches in the same reference, when the largest weight exceeds
        `compactness_min_prob`, then renormalises.
      foreground_scale: factor on the foreground channels of the output (not of the labels
        propagated further).
      tile: query tile side (memory/work trade-off only).
    """

    context: str = "crw"
    radius: int = 12
    window: str = "square"
    temperature: float = 0.05
    topk: int = 10
    normalize: bool = True
    long_term: tuple[int, ...] = (0, 5, 10)
    short_term: int = 3
    short_term_search: int = 8
    short_term_blur: float = 2.0
    crw_context: int = 20
    compactness: bool = False
    compactness_topk: int = 2
    compactness_sigma: float = 1.0
    compactness_min_prob: float = 0.1
    foreground_scale: float = 1.0
    tile: int = 8

    def __post_init__(self):
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if self.window not in correspondence.WINDOWS:
            raise ValueError(f"window must be one of {correspondence.WINDOWS}, got {self.window!r}")

    @property
    def max_refs(self) -> int:
        if self.context == "crw":
            return 1 + self.crw_context
        return len(self.long_term) + self.short_term


def reference_plan(frames: np.ndarray, preset: Preset) -> tuple[np.ndarray, np.ndarray]:
    """Reference frames of every frame.

    Args:
      frames: [T, H, W, 3] uint8 RGB (used by the 'mer' context's similarity ranking).
      preset: the propagation protocol.

    Returns:
      (indices [T, M] int32, valid [T, M] bool) with M = preset.max_refs; row t lists frames
      < t (row 0 is unused). Invalid slots point at frame 0 and are masked.
    """
    num_frames = frames.shape[0]
    indices = np.zeros((num_frames, preset.max_refs), np.int32)
    valid = np.zeros((num_frames, preset.max_refs), bool)
    blurred = _blurred_small(frames, preset.short_term_blur) if preset.context == "mer" else None
    for t in range(1, num_frames):
        if preset.context == "crw":
            refs = sorted({0, *range(max(0, t - preset.crw_context), t)})
        else:
            long_term = [i for i in preset.long_term if i < t]
            candidates = [
                t - k for k in range(1, preset.short_term_search + 1) if t - k >= 0 and t - k not in long_term
            ]
            mse = [np.mean((blurred[c] - blurred[t]) ** 2) for c in candidates]
            short = [candidates[i] for i in np.argsort(mse, kind="stable")[: preset.short_term]]
            refs = long_term + sorted(short)
        indices[t, : len(refs)] = refs
        valid[t, : len(refs)] = True
    return indices, valid


def _blurred_small(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Frames area-averaged to stride 4 and Gaussian-blurred: [T, H/4, W/4, 3] float32."""
    h, w = frames.shape[1:3]
    small = [cv2.resize(f, (max(w // 4, 1), max(h // 4, 1)), interpolation=cv2.INTER_AREA) for f in frames]
    return np.stack([cv2.GaussianBlur(f.astype(np.float32), (0, 0), sigma) for f in small])


def labels_at_stride(mask_ids: np.ndarray, object_ids: Sequence[int], height: int, width: int) -> np.ndarray:
    """One-hot labels [h, w, 1 + N] of an id mask [H, W], nearest-sampled to the feature grid.

    Feature cell (i, j) takes the mask at (floor(i H / h), floor(j W / w)) (nearest sampling
    as PyTorch's interpolate(mode='nearest')). Channel 0 is background; channel k the k-th of
    `object_ids`; any other value (e.g. void 255) counts as background.
    """
    rows = np.floor(np.arange(height) * mask_ids.shape[0] / height).astype(int)
    cols = np.floor(np.arange(width) * mask_ids.shape[1] / width).astype(int)
    sampled = mask_ids[rows][:, cols]
    labels = np.zeros((height, width, 1 + len(object_ids)), np.float32)
    labels[..., 0] = 1.0
    for k, object_id in enumerate(object_ids, start=1):
        labels[sampled == object_id, k] = 1.0
        labels[sampled == object_id, 0] = 0.0
    return labels


def _propagate_row(query, keys, labels, valid, inside, distance, preset: Preset):
    """Soft labels of one row of tiles.

    Args:
      query: [nTx, Q, C] the row's query tiles (Q = tile^2).
      keys: [nTx, M, K, C] reference windows (K = S^2), labels: [nTx, M, K, L].
      valid: [M] bool, inside: [nTx, K] bool, distance: [Q, K] float32.

    Returns:
      [nTx, Q, L].
    """
    logits = jnp.einsum("xqc,xmkc->xqmk", query, keys) / preset.temperature
    allowed = (distance <= preset.radius)[None, :, None, :] & inside[:, None, None, :] & valid[None, None, :, None]
    logits = jnp.where(allowed, logits, _MASKED)
    num_tiles_x, q, m, k = logits.shape
    if preset.topk:
        kth_largest = _top_k_over_refs(logits, preset.topk)[0][..., -1:, None]
        logits = jnp.where(logits >= kth_largest, logits, _MASKED)
    flat = logits.reshape(num_tiles_x, q, m * k)
    weights = jax.nn.softmax(flat, axis=-1)
    if preset.compactness:
        weights = _compactness(weights, logits, preset)
    return jnp.einsum("xqn,xnl->xql", weights, labels.reshape(num_tiles_x, m * k, -1))


def _top_k_over_refs(logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The k largest of logits [..., M, K] over its last two axes: (values [..., k], flat indices
    into M*K [..., k]).

    Exact, in two stages (the best k of each reference, then the best k of those), because XLA's
    CPU top-k sorts whole rows: on M*K = 21 x 1024 candidates this is ~40x faster.
    """
    per_ref_k = min(k, logits.shape[-1])
    values, index = jax.lax.top_k(logits, per_ref_k)  # [..., M, k']
    index = index + (jnp.arange(logits.shape[-2]) * logits.shape[-1])[:, None]
    values, which = jax.lax.top_k(values.reshape(*values.shape[:-2], -1), k)
    return values, jnp.take_along_axis(index.reshape(*index.shape[:-2], -1), which, axis=-1)


def _compactness(weights: jax.Array, logits: jax.Array, preset: Preset) -> jax.Array:
    """Multiplies weights [nTx, Q, M*K] by a Gaussian of the distance to the nearest of the top
    matches (logits [nTx, Q, M, K]) in the same reference, where the best weight exceeds
    `compactness_min_prob`, and renormalises."""
    num_refs, window_size = logits.shape[-2:]
    span = int(round(np.sqrt(window_size)))
    _, best = _top_k_over_refs(logits, preset.compactness_topk)  # [nTx, Q, topk]
    best_ref, best_pos = best // window_size, best % window_size
    best_y, best_x = best_pos // span, best_pos % span
    cand = jnp.arange(num_refs * window_size)
    cand_ref, cand_y, cand_x = cand // window_size, (cand % window_size) // span, (cand % window_size) % span
    d2 = (cand_y[None, None, None] - best_y[..., None]) ** 2 + (cand_x[None, None, None] - best_x[..., None]) ** 2
    same_ref = cand_ref[None, None, None] == best_ref[..., None]
    gauss = jnp.where(same_ref, jnp.exp(-d2 / (2 * preset.compactness_sigma**2)), 0.0).max(axis=2)
    shaped = weights * gauss
    shaped = shaped / jnp.maximum(shaped.sum(-1, keepdims=True), 1e-12)
    confident = weights.max(-1, keepdims=True) > preset.compactness_min_prob
    return jnp.where(confident, shaped, weights)


def propagate_frame(
    query: jax.Array, keys: jax.Array, labels: jax.Array, valid: jax.Array, preset: Preset
) -> jax.Array:
    """Soft labels of one target frame from its references.

    Args:
      query: [h, w, C] target features; keys: [M, h, w, C] reference features;
      labels: [M, h, w, L] reference soft labels; valid: [M] bool, which references to use.
      preset: the protocol (static).

    Returns:
      [h, w, L] soft labels (a convex combination of the references' labels).
    """
    if preset.normalize:
        query = query / jnp.maximum(jnp.linalg.norm(query, axis=-1, keepdims=True), 1e-12)
        keys = keys / jnp.maximum(jnp.linalg.norm(keys, axis=-1, keepdims=True), 1e-12)
    h, w, _ = query.shape
    tile, radius = preset.tile, preset.radius
    distance = jnp.asarray(correspondence.window_distance(radius, tile, preset.window))
    inside = jnp.asarray(correspondence.inside_image(h, w, radius, tile))  # [nTy, nTx, K]
    q_tiles = correspondence.tile_queries(query[None], tile)[0]  # [nTy, nTx, Q, C]
    span = tile + 2 * radius
    ny, nx = q_tiles.shape[:2]
    pad = ((0, 0), (radius, radius + ny * tile - h), (radius, radius + nx * tile - w), (0, 0))
    keys_padded, labels_padded = jnp.pad(keys, pad), jnp.pad(labels, pad)
    cols = np.arange(nx)[:, None] * tile + np.arange(span)[None, :]  # [nTx, S]

    def row(y):
        def windows(x):
            strip = jax.lax.dynamic_slice_in_dim(x, y * tile, span, axis=1)  # [M, S, Wp, D]
            win = strip[:, :, cols]  # [M, S, nTx, S, D]
            return win.transpose(2, 0, 1, 3, 4).reshape(nx, x.shape[0], span * span, x.shape[-1])

        return _propagate_row(
            q_tiles[y], windows(keys_padded), windows(labels_padded), valid, inside[y], distance, preset
        )

    out = jax.lax.map(row, jnp.arange(ny))  # [nTy, nTx, Q, L]
    return correspondence.untile_queries(out[None], h, w, tile)[0]


def labels_to_mask(
    soft: jax.Array, height: int, width: int, foreground_scale: float, output_size: tuple[int, int] | None = None
) -> jax.Array:
    """Output mask (channel index, int32) from soft labels [h, w, L].

    The foreground channels are scaled by `foreground_scale`, the map is upsampled bilinearly
    (half-pixel centres) to the stride-4 grid's full extent [4h, 4w] and cropped to the
    processed frame size [height, width]; if `output_size` differs (frames processed resized),
    it is resized bilinearly to it; then the argmax is taken. Returns [height, width] or
    [*output_size].
    """
    scale = jnp.concatenate([jnp.ones((1,)), jnp.full((soft.shape[-1] - 1,), foreground_scale)])
    h, w, channels = soft.shape
    up = jax.image.resize(soft * scale, (4 * h, 4 * w, channels), "bilinear")[:height, :width]
    if output_size is not None and tuple(output_size) != (height, width):
        up = jax.image.resize(up, (*output_size, channels), "bilinear")
    return jnp.argmax(up, axis=-1).astype(jnp.int32)


# Compiled once per (shape, size, scale) and reused across videos of the same size.
_labels_to_mask_jit = jax.jit(labels_to_mask, static_argnames=("height", "width", "foreground_scale", "output_size"))


class Propagator:
    """Propagates labels through a sequence of cached features, frame by frame.

    The per-frame step is jitted once per (feature shape, label count) and updates a device
    buffer of soft labels in place (donated), so nothing is recomputed per frame.
    """

    def __init__(self, preset: Preset):
        self.preset = preset
        self._step = jax.jit(self._frame_step, donate_argnums=1)
        self._override = jax.jit(self._frame_override, donate_argnums=0)

    def _frame_step(self, features, buffer, t, ref_index, ref_valid):
        refs = jnp.take(buffer, ref_index, axis=0)
        soft = propagate_frame(features[t], jnp.take(features, ref_index, axis=0), refs, ref_valid, self.preset)
        return buffer.at[t].set(soft)

    @staticmethod
    def _frame_override(buffer, t, labels, where):
        soft = jnp.where(where[..., None], labels, buffer[t])
        return buffer.at[t].set(soft)

    def __call__(
        self,
        features: jax.Array,
        frames: np.ndarray,
        annotations: dict[int, tuple[np.ndarray, np.ndarray]],
        progress=None,
    ):
        """Yields (t, soft labels [h, w, L]) for every frame from the first annotated one on.

        At later annotated frames the yielded labels are the propagated ones (before the new
        objects are written into the buffer that later frames propagate from).

        Args:
          features: [T, h, w, C] cached features of every frame.
          frames: [T, H, W, 3] uint8 RGB (for the reference plan).
          annotations: {t: (labels [h, w, L], where [h, w] bool)}: at frame t the labels replace
            the propagated ones where `where` holds (objects that first appear at t). The first
            annotated frame must set every pixel.
          progress: optional tqdm bar, advanced once per frame.
        """
        start = min(annotations)
        indices, valid = reference_plan(frames[start:], self.preset)
        features = features[start:]
        num_labels = annotations[start][0].shape[-1]
        buffer = jnp.zeros((features.shape[0], *features.shape[1:3], num_labels), jnp.float32)
        for t in range(features.shape[0]):
            if t > 0:
                buffer = self._step(features, buffer, t, indices[t], valid[t])
            soft = buffer[t]
            if start + t in annotations:
                labels, where = annotations[start + t]
                buffer = self._override(buffer, t, labels, where)
            if progress is not None:
                progress.update(1)
            yield start + t, buffer[t] if t == 0 else soft


def segment_video(
    encoder,
    propagator: Propagator,
    frames: np.ndarray,
    annotations: dict[int, np.ndarray],
    object_ids: Sequence[int],
    *,
    output_size: tuple[int, int] | None = None,
    flow: np.ndarray | None = None,
    progress=None,
):
    """Video object segmentation by label propagation.

    Args:
      encoder: frames [T, H, W, 3] uint8 -> features [T, h, w, C].
      propagator: the protocol.
      frames: [T, H, W, 3] uint8 RGB.
      annotations: {t: id mask at the output size}: the first annotated frame gives the initial
        objects; later annotations add the objects that first appear there. At annotated frames
        the output is the annotation itself (over the prediction, for later ones).
      object_ids: every object id, in label-channel order (channel k + 1 is object_ids[k]).
      output_size: (H', W') of the output masks if it differs from the frames' size.
      flow: optional [T, H, W, 2] flow of the frames for encoders that fuse flow.
      progress: optional tqdm bar advanced per frame.

    Yields:
      (t, id mask [H, W] or [H', W'] uint8) for every frame from the first annotated one on.
    """
    features = encoder(frames, flow)
    h, w = features.shape[1:3]
    height, width = frames.shape[1:3]
    ids = np.asarray([0, *object_ids], np.uint8)
    seeds = {}
    for t, mask in sorted(annotations.items()):
        labels = labels_at_stride(mask, object_ids, h, w)
        where = np.ones((h, w), bool) if not seeds else labels[..., 1:].any(-1)
        seeds[t] = (labels, where)
    mask_args = dict(height=height, width=width, foreground_scale=propagator.preset.foreground_scale)
    mask_args["output_size"] = None if output_size is None else tuple(output_size)
    for t, soft in propagator(features, frames, seeds, progress):
        mask = ids[np.asarray(_labels_to_mask_jit(soft, **mask_args))]
        if t in annotations:
            mask = np.where(annotations[t] > 0, annotations[t], mask if t > min(annotations) else 0).astype(np.uint8)
        yield t, mask
