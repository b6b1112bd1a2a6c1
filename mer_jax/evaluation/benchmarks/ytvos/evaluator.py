"""YouTube-VOS val: propagation with objects that first appear mid-video, written in the official
submission layout `Annotations/<video>/<frame>.png` (palette PNGs, one per frame of JPEGImages, at
the frames' size) under the output folder and zipped as `submission.zip` (docs/method.md,
'Benchmarks'); the files read are `data.py`'s.
"""

import functools
import os
import zipfile
from typing import Iterator

import jax

from mer_jax.evaluation import background, protocol, video_shards, vos
from mer_jax.evaluation.benchmarks.ytvos import data
from mer_jax.evaluation.field_errors import FieldError


class Evaluator:
    """Writes YouTube-VOS val predictions and the submission zip (scored by the official server).

    Args:
      ytvos_root: YouTube-VOS valid/ (JPEGImages/, Annotations/, meta.json).
      ytvos_max_height: frames taller than this are propagated at this height (None: native).
      sequences: comma-separated videos to run (None: all); names not in meta.json are ignored.
      save_overlays: also write `<output>/overlays/<video>.mp4`.
    """

    HEADLINE_KEYS = ()  # Scored by the official server: no numbers to show.

    def __init__(
        self, *, ytvos_root: str | None, ytvos_max_height: int | None, sequences: str | None, save_overlays: bool
    ):
        if ytvos_root is None:
            raise FieldError(
                "ytvos_root", "set {flag}=PATH (YouTube-VOS valid/ with JPEGImages/, Annotations/, meta.json)"
            )
        if ytvos_max_height is not None and ytvos_max_height < 1:
            raise FieldError(
                "ytvos_max_height", f"{{flag}} must be None (native size) or positive, got {ytvos_max_height}"
            )
        self.root = os.path.expanduser(ytvos_root)
        if not os.path.isfile(os.path.join(self.root, "meta.json")):
            raise FieldError(
                "ytvos_root", f"{self.root}/meta.json not found: {{flag}} must be YouTube-VOS's valid/ folder"
            )
        self.meta = data.read_meta(self.root)
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
        readers = [functools.partial(data.read_video, self.root, v, first, self.max_height) for v, first in videos]
        written = video_shards.map_videos(readers, segment)
        zip_path = os.path.join(output_dir, "submission.zip")
        if jax.process_index() == 0:
            expected = [os.path.join(annotations_dir, path) for paths in written for path in paths]
            missing = [path for path in expected if not os.path.isfile(path)]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} result PNG(s) are missing: {data.some(missing)}. The processes of a "
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
