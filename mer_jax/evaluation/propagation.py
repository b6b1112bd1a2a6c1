"""The label-propagation kernel, shared by every benchmark (docs/method.md, 'Label propagation').

Each frame's features are computed once and cached on the device; frame t's soft labels are
reconstructed from its reference frames' (already propagated) soft labels through a local
softmax over the references' windows (the first frame's window, or the whole first frame, per
`first_frame_window`), optionally restricted to the top-k affinities and sharpened by a
compactness prior. The windows and their masked affinities are those of training
(`correspondence.row_windows`, `correspondence.window_logits`); the work is processed one row of
query tiles at a time (`lax.map`), so memory is bounded by one row of windows whatever the frame
height (plus, with an unrestricted first frame, that row's [nTx, Q, h*w] affinities to it).
`Propagator` runs the kernel frame after frame without waiting for the device, on maps padded to
shape buckets. The protocol's numbers and reference frames are in `protocol.py`.
"""

import collections
import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mer_jax import correspondence, feature_maps
from mer_jax.evaluation import protocol


def propagate_frame(
    query: jax.Array,
    keys: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    preset: protocol.Preset,
    cells: jax.Array | None = None,
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
      cells: [h, w] bool, the grid's real cells, or None (all): maps padded to a shape bucket
        mark their padding False, so that no query ever takes a label from it.

    Returns:
      [h, w, L] soft labels (a convex combination of the references' labels).
    """
    if preset.normalize:
        query, keys = feature_maps.l2_normalize(query), feature_maps.l2_normalize(keys)
    h, w, _ = query.shape
    tile, radius = preset.tile, preset.radius
    first = 0 if preset.first_frame_window else 1  # the first windowed slot
    in_window = jnp.asarray(correspondence.window_distance(radius, tile, preset.window) <= radius)  # [Q, K]
    if cells is None:
        cells = jnp.ones((h, w), bool)
    cells_padded = correspondence.pad_for_windows(cells[..., None], radius, tile)  # False outside the grid
    q_tiles = correspondence.tile_queries(query[None], tile)[0]  # [nTy, nTx, Q, C]
    keys_padded = correspondence.pad_for_windows(keys[first:], radius, tile)
    labels_padded = correspondence.pad_for_windows(labels[first:], radius, tile)

    def row(y):
        blocks = []  # (logits [nTx, Q, R, K], labels [nTx, R, K, L]) of each group of candidates
        if not preset.first_frame_window:  # the whole first frame, as one group of h*w cells
            # One group of all h*w cells: XLA's CPU top-k is faster on one long row than on h short ones.
            first_keys, first_labels = keys[0].reshape(1, h * w, -1), labels[0].reshape(1, h * w, -1)
            allowed = (valid[0] & cells).reshape(1, h * w)
            logits = correspondence.window_logits(q_tiles[y], first_keys, allowed, preset.temperature)
            blocks.append((logits, jnp.broadcast_to(first_labels, (q_tiles.shape[1], *first_labels.shape))))
        if keys.shape[0] > first:
            k = jnp.swapaxes(correspondence.row_windows(keys_padded, y, radius, tile), 0, 1)  # [nTx, M', K, C]
            v = jnp.swapaxes(correspondence.row_windows(labels_padded, y, radius, tile), 0, 1)  # [nTx, M', K, L]
            inside = correspondence.row_windows(cells_padded, y, radius, tile)[..., 0]  # [nTx, K]
            allowed = in_window[None, :, None, :] & inside[:, None, None, :] & valid[None, None, first:, None]
            blocks.append((correspondence.window_logits(q_tiles[y], k, allowed, preset.temperature), v))
        return _weighted_labels(blocks, preset)

    out = jax.lax.map(row, jnp.arange(q_tiles.shape[0]))  # [nTy, nTx, Q, L]
    return correspondence.untile_queries(out[None], h, w, tile)[0]


def _weighted_labels(blocks: list[tuple[jax.Array, jax.Array]], preset: protocol.Preset) -> jax.Array:
    """Soft labels of one row of tiles from its masked logits.

    Args:
      blocks: groups of candidates, each (logits [nTx, Q, R, K], labels [nTx, R, K, L]): the
        windows of R references (K = S^2 keys), or the whole first frame as R = 1 group of
        K = h*w cells. With compactness there is one block, the windows.
      preset: top-k and compactness settings.

    Returns:
      [nTx, Q, L]: softmax over the candidates of all blocks together (top-k restricted,
      compactness-shaped), applied to their labels. The blocks are never concatenated and the
      softmax never normalised before the labels are weighted: sum(e v) / sum(e) over the blocks,
      with e = exp(logit - the largest logit) (times the compactness prior), is the same convex
      combination in fewer passes over the candidates.
    """
    if preset.topk is not None:
        best = jnp.concatenate([_top_k_over_refs(logits, preset.topk)[0] for logits, _ in blocks], axis=-1)
        kth_largest = jax.lax.top_k(best, preset.topk)[0][..., -1:, None]  # [nTx, Q, 1, 1]
        blocks = [(jnp.where(logits >= kth_largest, logits, correspondence.MASKED_LOGIT), v) for logits, v in blocks]
    largest = functools.reduce(jnp.maximum, [logits.max(axis=(-2, -1), keepdims=True) for logits, _ in blocks])
    weighted, total = 0.0, 0.0
    for logits, v in blocks:
        unnormalised = jnp.exp(logits - largest)  # [nTx, Q, R, K]
        if preset.compactness:
            # The largest softmax weight is exp(0) / sum(e): the prior applies where it exceeds the gate.
            confident = unnormalised.sum(axis=(-2, -1), keepdims=True) < 1.0 / preset.compactness_min_prob
            unnormalised = jnp.where(confident, unnormalised * _compactness_prior(logits, preset), unnormalised)
        flat = unnormalised.reshape(*unnormalised.shape[:2], -1)
        weighted = weighted + jnp.einsum("xqn,xnl->xql", flat, v.reshape(v.shape[0], -1, v.shape[-1]))
        total = total + flat.sum(axis=-1, keepdims=True)
    return weighted / total


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


def _compactness_prior(logits: jax.Array, preset: protocol.Preset) -> jax.Array:
    """The compactness prior of every candidate, [nTx, Q, M, K]: a Gaussian (sigma
    `compactness_sigma` feature pixels) of its distance to the nearest of the query's
    `compactness_topk` best matches (logits [nTx, Q, M, K]) in the same reference, 0 in a
    reference without one. The nearest match has the largest Gaussian, so one exp per candidate
    suffices."""
    num_refs, window_size = logits.shape[-2:]
    span = int(round(np.sqrt(window_size)))
    _, best = _top_k_over_refs(logits, preset.compactness_topk)  # [nTx, Q, topk]
    best_ref, best_pos = best // window_size, best % window_size
    best_y, best_x = best_pos // span, best_pos % span
    cand = np.arange(num_refs * window_size)
    cand_ref, cand_y, cand_x = cand // window_size, (cand % window_size) // span, (cand % window_size) % span
    d2 = (cand_y[None, None, None] - best_y[..., None]) ** 2 + (cand_x[None, None, None] - best_x[..., None]) ** 2
    unreachable = np.iinfo(np.int32).max  # no best match in this reference
    nearest = jnp.where(cand_ref[None, None, None] == best_ref[..., None], d2, unreachable).min(axis=2)
    gauss = jnp.exp(-nearest / (2 * preset.compactness_sigma**2))
    return jnp.where(nearest < unreachable, gauss, 0.0).reshape(logits.shape)


def bucket(size: int, step: int) -> int:
    """`size` rounded up to a multiple of `step`: the padded extent of a shape bucket."""
    return -(-size // step) * step


class Propagator:
    """Propagates labels through a sequence of cached features, frame by frame, without waiting
    for the device.

    Each frame's step is dispatched as soon as the previous one is (the soft labels stay in a
    donated device buffer), and its output is copied back asynchronously and handed out `lag`
    frames later, so the host never stalls the device. Features and labels are zero-padded to
    shape buckets (frames to a multiple of `frame_bucket`, the grid to multiples of
    `cell_bucket`, labels to multiples of `label_bucket`; the padding is masked out of every
    affinity), so the step compiles once per bucket, not once per video. Queries are the frames'
    own features, or separate query features (the VEN-refined ones of `eval.use_ven`).

    Args:
      preset: the propagation protocol.
      frame_bucket, cell_bucket, label_bucket: the shape buckets' steps.
      lag: how many frames' outputs may be in flight before the oldest is fetched.
    """

    def __init__(
        self,
        preset: protocol.Preset,
        *,
        frame_bucket: int = 16,
        cell_bucket: int = 8,
        label_bucket: int = 4,
        lag: int = 4,
    ):
        self.preset, self.lag = preset, lag
        self.frame_bucket, self.cell_bucket, self.label_bucket = frame_bucket, cell_bucket, label_bucket
        self._step = jax.jit(self._frame_step, donate_argnums=2)
        self._override = jax.jit(self._frame_override, donate_argnums=0)
        self._read = jax.jit(_read_frame, static_argnames=("height", "width", "num_labels", "readout"))

    def _frame_step(self, features, queries, buffer, cells, t, ref_index, ref_valid):
        refs = jnp.take(buffer, ref_index, axis=0)
        keys = jnp.take(features, ref_index, axis=0)
        soft = propagate_frame(queries[t], keys, refs, ref_valid, self.preset, cells)
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
        readout: Callable[[jax.Array], jax.Array] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (t, output) for every frame from the first annotated one on, in order.

        The output is the frame's soft labels [h, w, L], or `readout(soft labels)` computed on
        the device (e.g. the output mask: `vos.MaskReadout`), as a NumPy array. At later
        annotated frames it is the propagated labels' (before the new objects are written into
        the buffer that later frames propagate from).

        Args:
          features: [T, h, w, C] cached features of every frame.
          frames: [T, H, W, 3] uint8 RGB (for the reference plan).
          annotations: {t: (labels [h, w, L], where [h, w] bool)}: at frame t the labels replace
            the propagated ones where `where` holds (objects that first appear at t). The first
            annotated frame must set every pixel.
          progress: optional tqdm bar, advanced once per frame handed out.
          queries: [T, h, w, C] the frames' query features, or None (their own features).
          readout: a hashable (it is a static argument of a jitted function) function of soft
            labels [h, w, L] to the array handed out, or None.
        """
        start = min(annotations)
        indices, valid = protocol.reference_plan(frames[start:], self.preset)
        num_frames, h, w = features.shape[0] - start, *features.shape[1:3]
        num_labels = annotations[start][0].shape[-1]
        padded = (bucket(num_frames, self.frame_bucket), bucket(h, self.cell_bucket), bucket(w, self.cell_bucket))
        features = _pad_to(features[start:], padded)
        queries = features if queries is None else _pad_to(queries[start:], padded)
        # The real cells, on the device once rather than copied there with every frame's step.
        cells = jnp.asarray(_pad_to(np.ones((h, w), bool), padded[1:]))
        buffer = jnp.zeros((*padded, bucket(num_labels, self.label_bucket)), jnp.float32)
        shape = dict(height=h, width=w, num_labels=num_labels, readout=readout)
        in_flight = collections.deque()
        for t in range(num_frames):
            if t > 0:
                buffer = self._step(features, queries, buffer, cells, t, indices[t], valid[t])
            if t > 0:  # A later annotation's frame hands out the propagated labels.
                in_flight.append((start + t, self._read(buffer, t, **shape)))
            if start + t in annotations:
                labels, where = annotations[start + t]
                buffer = self._override(buffer, t, _pad_to(labels, buffer.shape[1:]), _pad_to(where, padded[1:]))
            if t == 0:  # The first annotated frame hands out the annotation itself.
                in_flight.append((start, self._read(buffer, 0, **shape)))
            in_flight[-1][1].copy_to_host_async()
            while len(in_flight) > self.lag or (t == num_frames - 1 and in_flight):
                frame, output = in_flight.popleft()
                if progress is not None:
                    progress.update(1)
                yield frame, np.asarray(output)


def _read_frame(buffer, t, *, height, width, num_labels, readout):
    """Frame t's soft labels cropped to the real grid [height, width, num_labels], read out."""
    soft = jax.lax.dynamic_index_in_dim(buffer, t, keepdims=False)[:height, :width, :num_labels]
    return soft if readout is None else readout(soft)


def _pad_to(x, shape: tuple[int, ...]):
    """Zero-pads the leading axes of x (NumPy or jax) up to `shape` (its trailing axes kept)."""
    pad = [(0, n - size) for n, size in zip(shape, x.shape)] + [(0, 0)] * (x.ndim - len(shape))
    return np.pad(x, pad) if isinstance(x, np.ndarray) else jnp.pad(x, pad)
