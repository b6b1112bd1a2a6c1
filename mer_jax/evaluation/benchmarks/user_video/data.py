"""A user's own video and first-frame mask, checked and read into a `vos.Video` for `mer_jax.track`.

Owns the rules for inputs that come from no benchmark: the video is an MP4/AVI file or a folder of
frames (`video_files.read_video`); the mask is a palette PNG (indices are ids, 255 void as in
DAVIS-2017), a grey PNG with one non-zero value (one object, id 1, as DAVIS-2016) or a grey PNG whose
values are the ids. A DAVIS sequence folder with its first annotation is read exactly as
`davis_data.read_video` reads it, so `track` and the DAVIS evaluator give the same masks. Every
problem is a `UserInputError` naming the file and the fix.
"""

import os

import cv2
import numpy as np

from mer_jax.data import resize, video_files
from mer_jax.evaluation import masks_io, vos
from mer_jax.evaluation.benchmarks.davis import data as davis_data

_MASK_FIX = (
    "Save the first-frame mask as a palette PNG whose colour indices are the object ids (0 background), "
    "or as a grey PNG (0 background; one other value for a single object, or one value per object)."
)


class UserInputError(ValueError):
    """An input `track` cannot use; the message names the file and says how to fix it."""


def read_first_mask(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Object ids and palette of a first-frame mask PNG.

    Palette ('P') PNG: the indices are the ids, 255 (void) counts as background (DAVIS-2017). Grey or
    1-bit PNG with one non-zero value (0/255, 0/1): one object, id 1 (DAVIS-2016). Grey with several
    non-zero values: the values are the ids.

    Args:
      path: the mask file.

    Returns:
      (ids [H, W] uint8, palette [256, 3] uint8: the file's own for a palette PNG, else the DAVIS one).

    Raises:
      UserInputError: the file is missing, unreadable, a colour image, or holds no object.
    """
    try:
        raw = masks_io.read_mask(path)
        palette = masks_io.read_palette(path)
    except (OSError, ValueError) as error:
        raise UserInputError(f"{error} {_MASK_FIX}") from error
    if palette is not None:
        ids, _ = davis_data.annotation_ids(raw, "2017")
    elif len(np.unique(raw[raw > 0])) == 1:
        ids, _ = davis_data.annotation_ids(raw, "2016")
    else:
        ids = raw
    if not ids.any():
        void = " or 255 (void)" if palette is not None else ""
        raise UserInputError(
            f"mask {path} has no object: every pixel is 0 (background){void}. Draw each object on the first frame "
            "with its own non-zero id."
        )
    return ids, masks_io.davis_palette() if palette is None else palette


def _frame_names(video: str, names: list[str]) -> list[str]:
    """Result PNG stems of the frames: a folder's file names without extension (unique), else as given."""
    if not os.path.isdir(video):
        return names
    stems = [os.path.splitext(name)[0] for name in names]
    seen: dict[str, str] = {}
    for name, stem in zip(names, stems):
        if stem in seen:
            raise UserInputError(
                f"frames {os.path.join(video, seen[stem])} and {os.path.join(video, name)} share the name {stem!r}, "
                "so their masks would share one PNG: remove or rename one."
            )
        seen[stem] = name
    return stems


def read_frames(video: str) -> tuple[np.ndarray, list[str]]:
    """(frames [T, H, W, 3] uint8 RGB at their own size, frame names) of an MP4/AVI file or a frame folder.

    Frame names are a folder's image names without extension, or `00000`, `00001`, ... for a file.

    Raises:
      UserInputError: the video is missing, a frame or the file cannot be decoded, frame sizes differ,
        or two frames of a folder share a name.
    """
    if not os.path.exists(video):
        raise UserInputError(f"video {video} does not exist: pass an MP4/AVI file or a folder of JPEG/PNG frames.")
    name = os.path.splitext(os.path.basename(os.path.normpath(video)))[0]
    try:
        frames, names = video_files.read_video(video_files.VideoEntry(name, video))
    except video_files.BadVideoError as error:
        fix = (
            "Replace or remove that file: every frame must be a readable JPEG/PNG of the same size."
            if os.path.isdir(video)
            else "Re-encode it (e.g. `ffmpeg -i VIDEO -c:v libx264 out.mp4`) or pass a folder of its frames."
        )
        raise UserInputError(f"{error}. {fix}") from error
    return frames, _frame_names(video, names)


def frame_rate(video: str) -> float | None:
    """Frames per second of a video file (None for a frame folder or when the file does not say)."""
    if os.path.isdir(video):
        return None
    capture = cv2.VideoCapture(video)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps if fps > 0 else None


def read_video(video: str, mask: str, max_height: int) -> vos.Video:
    """The video to segment: every frame (resized when taller than `max_height`) and the first-frame mask.

    Args:
      video: an MP4/AVI file or a folder of frames (sorted by name).
      mask: the first frame's mask PNG (`read_first_mask`), at the frames' own size.
      max_height: frames taller than this are processed at this height, aspect kept (width rounded,
        `resize.processing_size`); the masks still come out at the frames' own size.

    Returns:
      The video: frames [T, h, w, 3] uint8 at the processing size, annotations {0: ids [H, W]},
      object ids (the mask's non-zero ids, sorted), frame names, output size (H, W) when resized
      (else None) and the mask's palette.

    Raises:
      UserInputError: `max_height` is not positive, or a bad video or mask (`read_frames`,
        `read_first_mask`), or a mask whose size differs from the frames'.
    """
    if max_height < 1:
        raise UserInputError(f"--max_height must be a positive number of rows, got {max_height}")
    ids, palette = read_first_mask(mask)
    frames, names = read_frames(video)
    height, width = frames.shape[1:3]
    if ids.shape != (height, width):
        raise UserInputError(
            f"mask {mask} is {ids.shape[1]}x{ids.shape[0]} (WxH) but the frames of {video} are {width}x{height}: "
            f"draw the mask on the first frame at {width}x{height} (or resize it to that size with nearest-neighbour "
            "sampling, which keeps the ids)."
        )
    size = resize.processing_size(height, width, max_height)
    output_size = None
    if size != (height, width):
        frames = np.stack([resize.resize_frame(frame, size) for frame in frames])
        output_size = (height, width)
    name = os.path.splitext(os.path.basename(os.path.normpath(video)))[0]
    object_ids = [int(i) for i in np.unique(ids) if i != 0]
    return vos.Video(name, frames, {0: ids}, object_ids, names, output_size, palette)
