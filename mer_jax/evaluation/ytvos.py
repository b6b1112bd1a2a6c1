"""YouTube-VOS val: propagation with objects that first appear mid-video, submission zip.

Layout read: `<root>/JPEGImages/<video>/<frame>.jpg`, `<root>/Annotations/<video>/<frame>.png`
(each object annotated at its first frame) and `<root>/meta.json`. Written: the official
submission layout `Annotations/<video>/<frame>.png` (palette PNGs, one per frame of
JPEGImages, at the frames' size) under the output folder, zipped as `submission.zip`
(docs/method.md, 'Benchmarks').
"""

import functools
import json
import os
import zipfile
from typing import Iterator

import jax
import numpy as np

from mer_jax.data import frames_io
from mer_jax.evaluation import background, masks_io, protocol, video_shards, vos

_FRAME_EXTENSIONS = (".jpg", ".jpeg")
_LISTED = 5  # Paths named in an error message; the rest are counted.


def _some(paths: list[str]) -> str:
    """The first few paths, comma-separated, and how many more there are."""
    shown = ", ".join(paths[:_LISTED])
    return shown + (f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else "")


def read_meta(root: str) -> dict[str, dict[int, str]]:
    """{video: {object id: name of the frame where it is first annotated}} from meta.json."""
    path = os.path.join(root, "meta.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: --config.ytvos_root must be YouTube-VOS's valid/ folder")
    with open(path) as f:
        videos = json.load(f)["videos"]
    return {
        video: {int(obj): min(info["frames"]) for obj, info in entry["objects"].items()}
        for video, entry in videos.items()
    }


def processing_size(height: int, width: int, max_height: int | None) -> tuple[int, int]:
    """(height, width), or the same aspect at `max_height` rows when taller (None: never resized)."""
    if max_height is None or height <= max_height:
        return height, width
    return max_height, int(round(width * max_height / height))


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
    frame_files = frames_io.list_frames(frame_dir, _FRAME_EXTENSIONS)
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
            f"{video}: {len(orphans)} annotation(s) have no frame: {_some([annotation_path(f) for f in orphans])}; "
            f"missing {_some([frame_path(f) for f in orphans])}. Frames and annotations are matched by name: "
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
    size = processing_size(height, width, max_height)
    frames = frames_io.read_frames([os.path.join(frame_dir, n) for n in frame_files], size)
    annotations = {names.index(f): m for f, m in start_masks.items()}
    return vos.Video(
        video, frames, annotations, sorted(first_frames), names, (height, width), masks_io.read_palette(first_path)
    )


class Evaluator:
    """Writes YouTube-VOS val predictions and the submission zip (scored by the official server).

    Args:
      ytvos_root: YouTube-VOS valid/ (JPEGImages/, Annotations/, meta.json).
      ytvos_max_height: frames taller than this are propagated at this height (None: native).
      sequences: comma-separated videos to run (None: all); names not in meta.json are ignored.
      save_overlays: also write `<output>/overlays/<video>.mp4`.
    """

    def __init__(
        self, *, ytvos_root: str | None, ytvos_max_height: int | None, sequences: str | None, save_overlays: bool
    ):
        if ytvos_root is None:
            raise ValueError(
                "set --config.ytvos_root=PATH (YouTube-VOS valid/ with JPEGImages/, Annotations/, meta.json)"
            )
        if ytvos_max_height is not None and ytvos_max_height < 1:
            raise ValueError(f"ytvos_max_height must be None (native size) or positive, got {ytvos_max_height}")
        self.root = os.path.expanduser(ytvos_root)
        self.meta = read_meta(self.root)
        if sequences is not None:
            self.meta = {v: o for v, o in self.meta.items() if v in set(sequences.split(","))}
        self.max_height, self.save_overlays = ytvos_max_height, save_overlays

    def run(self, encoder: vos.FrameEncoder, preset: protocol.Preset, output_dir: str) -> dict:
        """Propagates every video; returns {'videos': n, 'zip': path}.

        The videos are split over the run's devices and processes (`video_shards`), each process
        writing its own videos' PNGs; process 0 then zips them all, so the processes of a
        multi-process run must share the output folder.

        Raises:
          FileNotFoundError: on process 0, a video's PNGs are not in the output folder (another
            process wrote them to a folder it does not share).
        """
        annotations_dir = os.path.join(output_dir, "Annotations")

        def segment(share: video_shards.Share, videos: Iterator[vos.Video]) -> list[list[str]]:
            written = []  # Each video's PNGs, relative to annotations_dir.
            with background.Writer() as writer:  # PNGs written while the next video is segmented
                for video, masks in vos.segment_videos(videos, encoder, preset, desc="ytvos videos" + share.label):
                    writer.submit(vos.write_masks, os.path.join(annotations_dir, video.name), video, masks)
                    written.append([os.path.join(video.name, f"{name}.png") for name in video.frame_names])
                    if self.save_overlays:
                        overlay = os.path.join(output_dir, "overlays", video.name + ".mp4")
                        writer.submit(vos.write_overlay, overlay, video, masks)
            return written

        videos = sorted(self.meta.items())
        readers = [functools.partial(read_video, self.root, v, first, self.max_height) for v, first in videos]
        written = video_shards.map_videos(readers, segment)
        zip_path = os.path.join(output_dir, "submission.zip")
        if jax.process_index() == 0:
            expected = [os.path.join(annotations_dir, path) for paths in written for path in paths]
            missing = [path for path in expected if not os.path.isfile(path)]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} result PNG(s) are missing: {_some(missing)}. The processes of a "
                    "multi-process run write their own videos there: give them all one shared --config.output."
                )
            with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
                for folder, subfolders, files in os.walk(annotations_dir):
                    subfolders.sort()  # Videos in name order, whatever the file system lists first.
                    for name in sorted(files):
                        path = os.path.join(folder, name)
                        archive.write(path, os.path.relpath(path, output_dir))
            print(f"Wrote {len(self.meta)} videos to {zip_path} (upload it to the YouTube-VOS evaluation server)")
        return {"videos": len(self.meta), "zip": zip_path}
