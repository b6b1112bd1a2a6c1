"""The label-propagation kernel, shared by every benchmark (docs/method.md, 'Label propagation').

Each frame's features are computed once and cached on the device; frame t's soft labels are
reconstructed from its reference frames' (already propagated) soft labels through a local
softmax over the references' windows (the first frame's window, or the whole first frame, per
`first_frame_window`), optionally restricted to the top-k affinities and sharpened by a
compactness prior. The windows and their masked affinities are those of training
(`correspondence.row_windows`, `correspondence.window_logits`); the work is processed one row of
query tiles at a time (`lax.map`), so memory is bounded by one row of windows whatever the frame
height (plus, with an unrestricted first frame, that row's [nTx, Q, h*w] affinities to it). The
protocol's numbers and reference frames are in `protocol.py`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mer_jax import correspondence, feature_maps
from mer_jax.evaluation import protocol


def propagate_frame(
    query: jax.Array, keys: jax.Array, labels: jax.Array, valid: jax.Array, preset: protocol.Preset
) -> jax.Array:
    """Soft labels of one target frame from its references.

    Reference slot 0 is the first frame (`protocol.reference_plan`). With
    `preset.first_frame_window` every reference is searched inside the window; without it the
    candidates of a query are all h*w cells of slot 0 plus the windowed cells of slots 1..M-1.
    Top-k and the softmax run over all candidates together.

    Args:
      query: [h, w, C] target features; keys: [M, h, w, C] reference features;
      labels: [M, h, w, L] reference soft labels; valid: [M] bool, which references to use.
      preset: the protocol (static).

    Returns:
      [h, w, L] soft labels (a convex combination of the references' labels).
    """
    if preset.normalize:
        query, keys = feature_maps.l2_normalize(query), feature_maps.l2_normalize(keys)
    h, w, _ = query.shape
    tile, radius = preset.tile, preset.radius
    first = 0 if preset.first_frame_window else 1  # the first windowed slot
    in_window = jnp.asarray(correspondence.window_distance(radius, tile, preset.window) <= radius)  # [Q, K]
    inside = jnp.asarray(correspondence.inside_image(h, w, radius, tile))  # [nTy, nTx, K]
    q_tiles = correspondence.tile_queries(query[None], tile)[0]  # [nTy, nTx, Q, C]
    keys_padded = correspondence.pad_for_windows(keys[first:], radius, tile)
    labels_padded = correspondence.pad_for_windows(labels[first:], radius, tile)

    def row(y):
        blocks = []  # (logits [nTx, Q, R, K], labels [nTx, R, K, L]) of each group of candidates
        if not preset.first_frame_window:  # the whole first frame, its h rows as R = h groups of w
            logits = correspondence.window_logits(q_tiles[y], keys[0], valid[0], preset.temperature)
            blocks.append((logits, jnp.broadcast_to(labels[0], (q_tiles.shape[1], *labels.shape[1:]))))
        if keys.shape[0] > first:
            k = jnp.swapaxes(correspondence.row_windows(keys_padded, y, radius, tile), 0, 1)  # [nTx, M', K, C]
            v = jnp.swapaxes(correspondence.row_windows(labels_padded, y, radius, tile), 0, 1)  # [nTx, M', K, L]
            allowed = in_window[None, :, None, :] & inside[y][:, None, None, :] & valid[None, None, first:, None]
            blocks.append((correspondence.window_logits(q_tiles[y], k, allowed, preset.temperature), v))
        return _weighted_labels(blocks, preset)

    out = jax.lax.map(row, jnp.arange(q_tiles.shape[0]))  # [nTy, nTx, Q, L]
    return correspondence.untile_queries(out[None], h, w, tile)[0]


def _weighted_labels(blocks: list[tuple[jax.Array, jax.Array]], preset: protocol.Preset) -> jax.Array:
    """Soft labels of one row of tiles from its masked logits.

    Args:
      blocks: groups of candidates, each (logits [nTx, Q, R, K], labels [nTx, R, K, L]): the
        windows of R references (K = S^2 keys), or the whole first frame as R = h rows of K = w
        cells. With compactness there is one block, the windows.
      preset: top-k and compactness settings.

    Returns:
      [nTx, Q, L]: softmax over the candidates of all blocks together (top-k restricted,
      compactness-shaped).
    """
    if preset.topk is not None:
        best = jnp.concatenate([_top_k_over_refs(logits, preset.topk)[0] for logits, _ in blocks], axis=-1)
        kth_largest = jax.lax.top_k(best, preset.topk)[0][..., -1:, None]  # [nTx, Q, 1, 1]
        blocks = [(jnp.where(logits >= kth_largest, logits, correspondence.MASKED_LOGIT), v) for logits, v in blocks]
    flat = [logits.reshape(*logits.shape[:2], -1) for logits, _ in blocks]  # [nTx, Q, R*K] each
    weights = jax.nn.softmax(jnp.concatenate(flat, axis=-1), axis=-1)
    if preset.compactness:
        weights = _compactness(weights, blocks[0][0], preset)
    labels = jnp.concatenate([v.reshape(v.shape[0], -1, v.shape[-1]) for _, v in blocks], axis=1)
    return jnp.einsum("xqn,xnl->xql", weights, labels)


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


def _compactness(weights: jax.Array, logits: jax.Array, preset: protocol.Preset) -> jax.Array:
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


class Propagator:
    """Propagates labels through a sequence of cached features, frame by frame.

    The per-frame step is jitted once per (feature shape, label count) and updates a device
    buffer of soft labels in place (donated), so nothing is recomputed per frame. Queries are the
    frames' own features, or separate query features (the VEN-refined ones of `eval.use_ven`).
    """

    def __init__(self, preset: protocol.Preset):
        self.preset = preset
        self._step = jax.jit(self._frame_step, donate_argnums=2)
        self._override = jax.jit(self._frame_override, donate_argnums=0)

    def _frame_step(self, features, queries, buffer, t, ref_index, ref_valid):
        refs = jnp.take(buffer, ref_index, axis=0)
        soft = propagate_frame(queries[t], jnp.take(features, ref_index, axis=0), refs, ref_valid, self.preset)
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
        queries: jax.Array | None = None,
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
          queries: [T, h, w, C] the frames' query features, or None (their own features).
        """
        start = min(annotations)
        indices, valid = protocol.reference_plan(frames[start:], self.preset)
        features = features[start:]
        queries = features if queries is None else queries[start:]
        num_labels = annotations[start][0].shape[-1]
        buffer = jnp.zeros((features.shape[0], *features.shape[1:3], num_labels), jnp.float32)
        for t in range(features.shape[0]):
            if t > 0:
                buffer = self._step(features, queries, buffer, t, indices[t], valid[t])
            soft = buffer[t]
            if start + t in annotations:
                labels, where = annotations[start + t]
                buffer = self._override(buffer, t, labels, where)
            if progress is not None:
                progress.update(1)
            yield start + t, buffer[t] if t == 0 else soft
