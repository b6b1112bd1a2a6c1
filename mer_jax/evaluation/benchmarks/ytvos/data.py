"""YouTube-VOS val, read: videos whose objects first appear mid-video.

Layout read: `<root>/JPEGImages/<video>/<frame>.jpg`, `<root>/Annotations/<video>/<frame>.png`
(each object annotated at its first frame) and `<root>/meta.json`.
"""

import json
import os

import numpy as np

from mer_jax.data import frames_io, resize
from mer_jax.evaluation import masks_io, vos

FRAME_EXTENSIONS = (".jpg", ".jpeg")
LISTED = 5  # Paths named in an error message; the rest are counted.


def some(paths: list[str]) -> str:
    """The first few paths, comma-separated, and how many more there are."""
    shown = ", ".join(paths[:LISTED])
    return shown + (f" and {len(paths) - LISTED} more" if len(paths) > LISTED else "")


def read_meta(root: str) -> dict[str, dict[int, str]]:
    """{video: {object id: name of the frame where it is first annotated}} from meta.json."""
    path = os.path.join(root, "meta.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: the root must be YouTube-VOS's valid/ folder")
    with open(path) as f:
        videos = json.load(f)["videos"]
    return {
        video: {int(obj): min(info["frames"]) for obj, info in entry["objects"].items()}
        for video, entry in videos.items()
    }


def read_video(root: str, video: str, first_frames: dict[int, str], max_height: int | None) -> vos.Video:
    """One val video to segment.

    Args:
      root: the valid/ folder.
      video: the video's name.
      first_frames: {object id: frame where it is first annotated} (from `read_meta`).
      max_height: frames taller than this are processed at this height (None: native size).

    Returns:
      The video: every JPEG frame (at the processing size), one annotation per frame where
      objects first appear (with those objects only, at the annotations' size, which is the
      output size) and the first annotation's palette. Frames and annotations are matched by name.

    Raises:
      FileNotFoundError: the frame folder is missing or holds no JPEG, an annotation has no JPEG
        frame, or an object's start frame (meta.json) has no JPEG or no annotation (each named).
    """
    frame_dir = os.path.join(root, "JPEGImages", video)
    annotation_dir = os.path.join(root, "Annotations", video)
    frame_files = frames_io.list_frames(frame_dir, FRAME_EXTENSIONS)
    names = [os.path.splitext(n)[0] for n in frame_files]

    def annotation_path(frame: str) -> str:
        return os.path.join(annotation_dir, frame + ".png")

    def frame_path(frame: str) -> str:
        return os.path.join(frame_dir, frame + ".jpg")

    annotated = (
        sorted(n[: -len(".png")] for n in os.listdir(annotation_dir) if n.endswith(".png"))
        if os.path.isdir(annotation_dir)
        else []
    )
    orphans = [frame for frame in annotated if frame not in names]
    if orphans:
        raise FileNotFoundError(
            f"{video}: {len(orphans)} annotation(s) have no frame: {some([annotation_path(f) for f in orphans])}; "
            f"missing {some([frame_path(f) for f in orphans])}. Frames and annotations are matched by name: "
            "restore the missing JPEGs from the YouTube-VOS download."
        )
    start_masks = {}
    for object_id, frame in first_frames.items():
        if frame not in names:
            raise FileNotFoundError(
                f"{video}: object {object_id} starts at frame {frame} (meta.json), but {frame_path(frame)} is "
                "missing: restore it from the YouTube-VOS download (propagation starts from annotated frames)."
            )
        if not os.path.isfile(annotation_path(frame)):
            raise FileNotFoundError(
                f"{video}: object {object_id} starts at frame {frame} (meta.json), but its annotation "
                f"{annotation_path(frame)} is missing: restore it from the YouTube-VOS download."
            )
        annotation = masks_io.read_mask(annotation_path(frame))
        mask = start_masks.setdefault(frame, np.zeros_like(annotation))
        mask[annotation == object_id] = object_id
    first_path = annotation_path(min(start_masks))
    height, width = masks_io.read_mask(first_path).shape
    size = resize.processing_size(height, width, max_height)
    frames = frames_io.read_frames([os.path.join(frame_dir, n) for n in frame_files], size)
    annotations = {names.index(f): m for f, m in start_masks.items()}
    return vos.Video(
        video, frames, annotations, sorted(first_frames), names, (height, width), masks_io.read_palette(first_path)
    )
