"""Exact point tracks of the procedural videos, and those videos as a TAP-Vid benchmark.

Every layer of a procedural video moves by a known rigid transform (`synthetic_video.Layer`), the
same one its exact flow is computed from, so a surface point's position in every frame and
whether it is seen there follow exactly: a point is sampled at a random pixel of a random frame,
taken on the frontmost layer there, carried through that layer's transform to every frame, and
marked occluded where it leaves the image or a layer in front of it covers it. `tapvid_examples`
packs videos and tracks in the TAP-Vid format (`evaluation/tapvid_data.py`).
"""

import numpy as np

from mer_jax.data import synthetic_video


def _contains(layer: synthetic_video.Layer, canon_x: np.ndarray, canon_y: np.ndarray) -> np.ndarray:
    """Whether the layer's outline contains canonical points (the renderer's mask test)."""
    if layer.radius is None:
        return np.ones(np.shape(canon_x), bool)
    return np.hypot(canon_x, canon_y) - layer.radius(np.arctan2(canon_y, canon_x)) < 0.0


def _to_canonical(layer: synthetic_video.Layer, t: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple:
    """T_t^{-1}(x, y) = R(-angle_t) ((x, y) - centre_t), elementwise over t, x, y."""
    cos_t, sin_t = np.cos(layer.angles[t]), np.sin(layer.angles[t])
    offset_x, offset_y = x - layer.centres[t, 0], y - layer.centres[t, 1]
    return cos_t * offset_x + sin_t * offset_y, cos_t * offset_y - sin_t * offset_x


def _to_image(layer: synthetic_video.Layer, t: np.ndarray, canon_x: np.ndarray, canon_y: np.ndarray) -> tuple:
    """T_t(c) = R(angle_t) c + centre_t, elementwise over t and c."""
    cos_t, sin_t = np.cos(layer.angles[t]), np.sin(layer.angles[t])
    x = cos_t * canon_x - sin_t * canon_y + layer.centres[t, 0]
    return x, sin_t * canon_x + cos_t * canon_y + layer.centres[t, 1]


def surface_points(
    layers: list[synthetic_video.Layer], t: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The surface seen at image points (x, y) of frames t (arrays of one shape): (layer id of the
    frontmost layer containing it, its canonical x, canonical y on that layer), each of that shape."""
    owner = np.zeros(np.shape(x), int)
    canon_x, canon_y = np.zeros(np.shape(x)), np.zeros(np.shape(x))
    for layer_id, layer in enumerate(layers):  # back to front: the last layer containing a point wins
        layer_x, layer_y = _to_canonical(layer, t, x, y)
        on_top = _contains(layer, layer_x, layer_y)
        owner = np.where(on_top, layer_id, owner)
        canon_x, canon_y = np.where(on_top, layer_x, canon_x), np.where(on_top, layer_y, canon_y)
    return owner, canon_x, canon_y


def point_tracks(
    seed: int,
    *,
    num_points: int,
    num_frames: int,
    height: int,
    width: int,
    num_objects: int = 3,
    kind: str = "easy",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact tracks of `num_points` surface points of `synthetic_video.generate_video(seed, ...)`.

    Args:
      seed: the video's seed; the points are drawn from a generator seeded by (seed, 1).
      num_points: N.
      num_frames, height, width, num_objects, kind: the video's arguments.

    Returns:
      (tracks [N, T, 2] float64 (x, y) pixel coordinates, pixel centres at integers as the
      renderer's; occluded [N, T] bool; layer [N] int, the mask id of each point's surface).
    """
    layers = synthetic_video.scene_layers(
        seed, num_frames=num_frames, height=height, width=width, num_objects=num_objects, kind=kind
    )
    rng = np.random.default_rng([seed, 1])
    source = rng.integers(num_frames, size=num_points)
    x, y = rng.uniform(-0.5, [width - 0.5, height - 0.5], (num_points, 2)).T
    owner, _, _ = surface_points(layers, source, x, y)
    frames = np.arange(num_frames)
    tracks = np.zeros((num_points, num_frames, 2))
    occluded = np.zeros((num_points, num_frames), bool)
    for n in range(num_points):
        layer = layers[owner[n]]
        canon_x, canon_y = _to_canonical(layer, source[n], x[n], y[n])
        track_x, track_y = _to_image(layer, frames, canon_x, canon_y)
        tracks[n] = np.stack([track_x, track_y], axis=-1)
        outside = (track_x < -0.5) | (track_x >= width - 0.5) | (track_y < -0.5) | (track_y >= height - 0.5)
        covered = np.zeros(num_frames, bool)
        for front in layers[owner[n] + 1 :]:
            covered |= _contains(front, *_to_canonical(front, frames, track_x, track_y))
        occluded[n] = outside | covered
    return tracks, occluded, owner


def tapvid_examples(
    seed: int, num_videos: int, *, num_points: int, num_frames: int, height: int, width: int, **video_kwargs
) -> dict[str, dict]:
    """{"synthetic_<i>": TAP-Vid example} of `synthetic_video.generate_videos(seed, num_videos, ...)`:
    "video" uint8 [T, H, W, 3], "points" float32 [N, T, 2] (x, y) normalised to [0, 1] (raster
    coordinates over the frame size: pixel centre x maps to (x + 0.5) / W), "occluded" bool [N, T].

    Args:
      seed, num_videos: as `generate_videos`.
      num_points: tracks per video.
      num_frames, height, width: the videos' size.
      **video_kwargs: other arguments of `generate_video` (num_objects, kind, lighting, ...).
    """
    examples = {}
    for i in range(num_videos):
        video_seed = synthetic_video.video_seed(seed, i)
        size = dict(num_frames=num_frames, height=height, width=width)
        video = synthetic_video.generate_video(video_seed, **size, **video_kwargs)
        track_kwargs = {key: video_kwargs[key] for key in ("num_objects", "kind") if key in video_kwargs}
        tracks, occluded, _ = point_tracks(video_seed, num_points=num_points, **size, **track_kwargs)
        examples[f"synthetic_{i:03d}"] = {
            "video": video.frames,
            "points": ((tracks + 0.5) / [width, height]).astype(np.float32),
            "occluded": occluded,
        }
    return examples
