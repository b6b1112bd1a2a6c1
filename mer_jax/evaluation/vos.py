"""Video object segmentation by label propagation: the one read -> encode -> propagate -> write loop.

DAVIS, YouTube-VOS and the synthetic held-out set each read their videos into `Video`s;
`segment_videos` encodes every frame once, propagates the annotated objects frame by frame
(`propagation.Propagator`) and returns each video's id masks, which `write_masks` and
`write_overlay` store (docs/method.md, 'Label propagation' and 'Benchmarks'). Ids become
one-hot labels on the feature grid (`labels_at_stride`) and soft labels become ids again at the
output size (`labels_to_mask`).
"""

import dataclasses
import os
from typing import Iterable, Iterator, NamedTuple, Protocol, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from mer_jax.evaluation import background, masks_io, overlays, propagation, protocol
from mer_jax.models import encoder as encoder_lib


class RefinedFeatures(NamedTuple):
    """What an encoder with VEN-refined queries returns (`features.TrainedEncoder`, use_ven)."""

    keys: jax.Array  # [T, h, w, C] encoder features: the references' side of every affinity
    queries: jax.Array  # [T, h, w, C] each frame's features refined by the VEN: the query side


class FrameEncoder(Protocol):
    """Maps uint8 RGB frames [T, H, W, 3] (and optionally their flow [T, H, W, 2]) to features
    [T, ceil(H/s), ceil(W/s), C] (a jax.Array), or to `RefinedFeatures`, at its output stride
    s = `stride`; see `features.py`."""

    stride: int

    def __call__(self, frames: np.ndarray, flow: np.ndarray | None = None) -> jax.Array | RefinedFeatures: ...


def keys_and_queries(features: jax.Array | RefinedFeatures) -> tuple[jax.Array, jax.Array | None]:
    """(keys [T, h, w, C], queries [T, h, w, C] or None when the queries are the keys)."""
    if isinstance(features, RefinedFeatures):
        return features.keys, features.queries
    return features, None


class Video(NamedTuple):
    """One video to segment.

    Attributes:
      name: the video's (sequence's) name.
      frames: [T, H, W, 3] uint8 RGB at the processing size.
      annotations: {t: ids [H', W'] uint8 at the output size}: the first annotated frame gives
        the initial objects; later ones add the objects that first appear there.
      object_ids: every object id, in label-channel order (channel k + 1 is object_ids[k]).
      frame_names: the T frames' names (result PNG stems).
      output_size: (H', W') of the output masks if it differs from the frames' (H, W), else None.
      palette: [256, 3] uint8 colours of the result PNGs, or None (the DAVIS palette).
      flow: [T, H, W, 2] flow of the frames for encoders that fuse flow, or None.
    """

    name: str
    frames: np.ndarray
    annotations: dict[int, np.ndarray]
    object_ids: list[int]
    frame_names: list[str]
    output_size: tuple[int, int] | None = None
    palette: np.ndarray | None = None
    flow: np.ndarray | None = None


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


def labels_to_mask(
    soft: jax.Array,
    height: int,
    width: int,
    foreground_scale: float,
    output_size: tuple[int, int] | None = None,
    stride: int = encoder_lib.OUTPUT_STRIDE,
) -> jax.Array:
    """Output mask (channel index, int32) from soft labels [h, w, L].

    The foreground channels are scaled by `foreground_scale`, the map is upsampled bilinearly
    (half-pixel centres) to the feature grid's full extent [stride h, stride w] (the encoder's) and
    cropped to the processed frame size [height, width]; if `output_size` differs (frames
    processed resized), it is resized bilinearly to it; then the argmax is taken. Returns
    [height, width] or [*output_size].
    """
    scale = jnp.concatenate([jnp.ones((1,)), jnp.full((soft.shape[-1] - 1,), foreground_scale)])
    h, w, channels = soft.shape
    up = jax.image.resize(soft * scale, (stride * h, stride * w, channels), "bilinear")[:height, :width]
    if output_size is not None and tuple(output_size) != (height, width):
        up = jax.image.resize(up, (*output_size, channels), "bilinear")
    return jnp.argmax(up, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class MaskReadout:
    """Soft labels [h, w, L] -> the output mask of channel indices ([height, width] or
    [*output_size] uint8), by `labels_to_mask`. Hashable, so the propagator compiles it once per
    size and runs it on the device beside the propagation step."""

    height: int
    width: int
    foreground_scale: float
    output_size: tuple[int, int] | None = None
    stride: int = encoder_lib.OUTPUT_STRIDE

    def __call__(self, soft: jax.Array) -> jax.Array:
        mask = labels_to_mask(soft, self.height, self.width, self.foreground_scale, self.output_size, self.stride)
        return mask.astype(jnp.uint8)


def segment_video(
    encoder: FrameEncoder, propagator: propagation.Propagator, video: Video, progress=None
) -> Iterator[tuple[int, np.ndarray]]:
    """Segments one video by label propagation.

    Args:
      encoder: frames [T, H, W, 3] uint8 (and flow) -> features [T, h, w, C].
      propagator: the protocol's propagator.
      video: frames, annotations and object ids. At annotated frames the output is the
        annotation itself (over the prediction, for later ones).
      progress: optional tqdm bar advanced per frame.

    Yields:
      (t, id mask [H, W] or [H', W'] uint8) for every frame from the first annotated one on.
    """
    feats, queries = keys_and_queries(encoder(video.frames, video.flow))
    h, w = feats.shape[1:3]
    height, width = video.frames.shape[1:3]
    annotations = video.annotations
    ids = np.asarray([0, *video.object_ids], np.uint8)
    seeds = {}
    for t, mask in sorted(annotations.items()):
        labels = labels_at_stride(mask, video.object_ids, h, w)
        where = np.ones((h, w), bool) if not seeds else labels[..., 1:].any(-1)
        seeds[t] = (labels, where)
    output_size = None if video.output_size is None else tuple(video.output_size)
    readout = MaskReadout(height, width, propagator.preset.foreground_scale, output_size, propagator.preset.stride)
    for t, channels in propagator(feats, video.frames, seeds, progress, queries=queries, readout=readout):
        mask = ids[channels]
        if t in annotations:
            mask = np.where(annotations[t] > 0, annotations[t], mask if t > min(annotations) else 0).astype(np.uint8)
        yield t, mask


class CopyFirstFrame:
    """The `copy` floor: no features, no propagation; each object's annotation held still.

    Passed to `segment_videos` in place of a `FrameEncoder`: every frame's mask is the first
    annotated frame's, and an object annotated later is held still from its frame on (the rule
    `segment_video` applies at annotated frames). A model that does not beat it has learnt
    nothing about motion (docs/method.md, 'Benchmarks').
    """

    def masks(self, video: Video) -> np.ndarray:
        """[T, H', W'] uint8: 0 before the first annotated frame, then the held annotations."""
        start = min(video.annotations)
        masks = np.zeros((len(video.frames), *video.annotations[start].shape), np.uint8)
        held = np.zeros_like(masks[0])
        for t in range(start, len(video.frames)):
            if t in video.annotations:
                annotation = video.annotations[t]
                held = np.where(annotation > 0, annotation, held).astype(np.uint8)
            masks[t] = held
        return masks


def segment_videos(
    videos: Iterable[Video], encoder: FrameEncoder | CopyFirstFrame, preset: protocol.Preset, desc: str = "videos"
) -> Iterator[tuple[Video, np.ndarray]]:
    """Segments videos one at a time (read lazily from `videos`, the next one in a background
    thread while this one is segmented), by label propagation with the encoder's features, or by
    the copy floor (`CopyFirstFrame`, which ignores the preset).

    Yields:
      (video, masks [T, H', W'] uint8): frames before the first annotated one are all 0.
    """
    propagator = propagation.Propagator(preset)
    for video in tqdm.tqdm(background.prefetch(videos), desc=desc, unit="video"):
        if isinstance(encoder, CopyFirstFrame):
            yield video, encoder.masks(video)
            continue
        start = min(video.annotations)
        masks = np.zeros((len(video.frames), *video.annotations[start].shape), np.uint8)
        with tqdm.tqdm(total=len(video.frames) - start, desc=video.name, leave=False, unit="frame") as bar:
            for t, mask in segment_video(encoder, propagator, video, progress=bar):
                masks[t] = mask
        yield video, masks


def write_masks(folder: str | os.PathLike, video: Video, masks: np.ndarray) -> None:
    """Writes masks [T, H', W'] as `<folder>/<frame name>.png` palette PNGs (the video's palette)."""
    for name, mask in zip(video.frame_names, masks):
        masks_io.write_mask(os.path.join(folder, f"{name}.png"), mask, video.palette)


def write_overlay(path: str, video: Video, masks: np.ndarray, fps: float = 10.0) -> None:
    """Writes an MP4 (`fps` frames/s) of the masks [T, H', W'] drawn over the frames (resized to
    the masks' size), each object in its DAVIS palette colour whatever the video's palette
    (`overlays.draw_mask`)."""
    height, width = masks.shape[1:]
    writer = overlays.OverlayWriter(path, height, width, fps)
    for frame, mask in zip(video.frames, masks):
        if frame.shape[:2] != (height, width):
            frame = cv2.resize(frame, (width, height))
        writer.add_mask(frame, mask)
    writer.close()
