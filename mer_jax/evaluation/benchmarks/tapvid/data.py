"""TAP-Vid point tracks on disk: the published pickles, checked, resized and queried as the protocol does.

A pickle holds either a dict {video name: example} (TAP-Vid-DAVIS) or a list of examples
(TAP-Vid-Kinetics, one pickle per shard, and RGB-Stacking); an example is
{"video": uint8 [T, H, W, 3] (or a list of T encoded JPEG/PNG frames, as the Kinetics shards
store them), "points": [N, T, 2] (x, y) normalised to [0, 1] by the frame's width and height,
"occluded": [N, T] bool}. The protocol resizes every video to 256x256 (a Lanczos filter, as the
reference's mediapy) and scales the points by the same size, giving raster coordinates in which
pixel i spans [i, i + 1). In query-first mode each point's query is its first visible frame;
points never visible are dropped. `write_pickle` writes examples in the same format (the
procedural videos' exact tracks, `data/synthetic_tracks.py`).
"""

import functools
import glob
import io
import os
import pickle
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
from PIL import Image

KEYS = ("video", "points", "occluded")
_FORMAT = (
    "a TAP-Vid example is a dict with 'video' uint8 [T, H, W, 3] (or T encoded frames), "
    "'points' [N, T, 2] normalised (x, y) and 'occluded' [N, T] bool"
)


class TrackedVideo(NamedTuple):
    """One video with its ground-truth tracks, as the protocol evaluates it.

    Attributes:
      name: the video's key (DAVIS) or `<pickle stem>_<index>` (list pickles).
      frames: [T, S, S, 3] uint8 RGB resized to the protocol's S x S.
      query_frames: [N] int, each point's first visible frame.
      tracks: [N, T, 2] float32 (x, y) raster coordinates in the S x S frames.
      occluded: [N, T] bool.
    """

    name: str
    frames: np.ndarray
    query_frames: np.ndarray
    tracks: np.ndarray
    occluded: np.ndarray


def list_pickles(path: str) -> list[str]:
    """The pickle at `path`, or the `*.pkl` files of the folder `path` (sorted).

    Raises:
      FileNotFoundError: nothing there, or a folder without pickles.
    """
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "*.pkl")))
        if found:
            return found
        raise FileNotFoundError(f"no .pkl file in {path}: set tapvid_path to tapvid_davis.pkl or the Kinetics folder")
    raise FileNotFoundError(f"TAP-Vid pickle {path} does not exist (download it from the TAP-Vid page)")


def read_pickle(path: str) -> list[tuple[str, dict]]:
    """(name, example) of every video of one pickle, in its order.

    Raises:
      ValueError: the file is not a pickle of a dict or list of examples.
    """
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError) as error:
        raise ValueError(f"cannot read TAP-Vid pickle {path}: {error}") from error
    if isinstance(data, dict):
        return [(str(name), example) for name, example in data.items()]
    if isinstance(data, (list, tuple)):
        stem = os.path.splitext(os.path.basename(path))[0]
        return [(f"{stem}_{i:04d}", example) for i, example in enumerate(data)]
    raise ValueError(f"TAP-Vid pickle {path} holds a {type(data).__name__}; expected a dict or list of examples")


def _decode_frames(video, where: str) -> np.ndarray:
    """uint8 [T, H, W, 3] from an array or a sequence of encoded frames (RGB as Pillow decodes them)."""
    if isinstance(video, (list, tuple)) and video and isinstance(video[0], bytes):
        try:
            return np.stack([np.asarray(Image.open(io.BytesIO(frame)).convert("RGB")) for frame in video])
        except (OSError, ValueError) as error:
            raise ValueError(f"{where}: cannot decode its frames: {error}") from error
    return np.asarray(video)


def check_example(example, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames uint8 [T, H, W, 3], points float64 [N, T, 2], occluded bool [N, T]) of one example.

    Args:
      example: the pickled example.
      where: '<pickle>: video <name>', to name it in errors.

    Raises:
      ValueError: a key is missing, or a shape, dtype or value is not the format's (named).
    """
    if not isinstance(example, dict):
        raise ValueError(f"{where} is a {type(example).__name__}; {_FORMAT}")
    missing = [key for key in KEYS if key not in example]
    if missing:
        raise ValueError(f"{where} has no {missing}; {_FORMAT}")
    frames = _decode_frames(example["video"], where)
    points, occluded = np.asarray(example["points"]), np.asarray(example["occluded"])
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"{where}: 'video' is {frames.dtype} {frames.shape}; {_FORMAT}")
    num_frames = len(frames)
    if points.ndim != 3 or points.shape[1:] != (num_frames, 2) or not np.issubdtype(points.dtype, np.number):
        raise ValueError(f"{where}: 'points' is {points.dtype} {points.shape} for {num_frames} frames; {_FORMAT}")
    if occluded.shape != points.shape[:2] or not (occluded.dtype == bool or np.isin(occluded, (0, 1)).all()):
        raise ValueError(f"{where}: 'occluded' is {occluded.dtype} {occluded.shape}, points {points.shape}; {_FORMAT}")
    occluded = occluded.astype(bool)
    points = points.astype(np.float64)
    if not np.isfinite(points[~occluded]).all():
        raise ValueError(f"{where}: 'points' is not finite at a visible frame")
    return frames, points, occluded


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, size, size, 3] with a Lanczos filter (as is if already that size)."""
    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.LANCZOS)) for f in frames])


def queries_first(occluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept [N] bool: points visible in some frame, query frames [N'] int: each kept point's first
    visible frame) of occlusions [N, T]."""
    kept = (~occluded).any(axis=1)
    return kept, np.argmax(~occluded[kept], axis=1)


def read_videos(path: str, size: int = 256, names: Sequence[str] | None = None) -> Iterator[TrackedVideo]:
    """The videos of a pickle (or a folder of pickles), checked, resized and queried first.

    Args:
      path: a TAP-Vid pickle or a folder of them.
      size: the side the frames are resized to (the protocol's 256).
      names: only these videos (None: all), in the pickles' order.

    Raises:
      ValueError: an example breaks the format, or has no point visible in any frame.
      FileNotFoundError: a requested video is in no pickle.
    """
    for read in video_readers(path, size, names):
        yield read()


def video_readers(
    path: str, size: int = 256, names: Sequence[str] | None = None
) -> Iterator[Callable[[], TrackedVideo]]:
    """`read_videos` in two steps: one function per video, in the same order, that checks,
    resizes and queries it when called. Each pickle is loaded as the iterator reaches it, and a
    video's frames are decoded only if its function is called (`video_shards` reads only a
    process's own videos). Raises as `read_videos` (format errors when a function is called)."""
    wanted = None if names is None else set(names)
    found = set()
    for pickle_path in list_pickles(path):
        for name, example in read_pickle(pickle_path):
            if wanted is not None and name not in wanted:
                continue
            found.add(name)
            yield functools.partial(_tracked_video, name, example, size, f"{pickle_path}: video {name!r}")
    if wanted is not None and wanted - found:
        raise FileNotFoundError(f"videos {sorted(wanted - found)} are in no pickle of {path}")


def _tracked_video(name: str, example, size: int, where: str) -> TrackedVideo:
    """One example checked (`check_example`, errors naming `where`), resized to size x size and
    queried first."""
    frames, points, occluded = check_example(example, where)
    kept, query_frames = queries_first(occluded)
    if not kept.any():
        raise ValueError(f"{where} has no point visible in any frame")
    return TrackedVideo(
        name,
        resize_frames(frames, size),
        query_frames.astype(np.int32),
        (points[kept] * size).astype(np.float32),
        occluded[kept],
    )


def write_pickle(path: str, examples: dict[str, dict]) -> None:
    """Writes {name: {"video", "points", "occluded"}} as a TAP-Vid-DAVIS-style pickle, atomically
    (a killed write never leaves a partial file)."""
    for name, example in examples.items():
        check_example(example, f"example {name!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "wb") as f:
        pickle.dump(examples, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, path)
