"""YouTube-VOS val: propagation with objects that first appear mid-video, submission zip.

Layout read: `<root>/JPEGImages/<video>/<frame>.jpg`, `<root>/Annotations/<video>/<frame>.png`
(each object annotated at its first frame) and `<root>/meta.json`. Written: the official
submission layout `Annotations/<video>/<frame>.png` (palette PNGs, one per frame of
JPEGImages, at the frames' size) under the output folder, zipped as `submission.zip`.
"""

import json
import os
import zipfile

import cv2
import numpy as np
import tqdm

from mer_jax.data import frames_io
from mer_jax.evaluation import masks_io, overlays, propagation


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


class Evaluator:
    """Writes YouTube-VOS val predictions and the submission zip (scored by the official server)."""

    def __init__(self, config):
        self.root = os.path.expanduser(config.ytvos_root)
        if not self.root:
            raise ValueError(
                "set --config.ytvos_root=PATH (YouTube-VOS valid/ with JPEGImages/, Annotations/, meta.json)"
            )
        self.meta = read_meta(self.root)
        if config.sequences:
            self.meta = {v: o for v, o in self.meta.items() if v in set(config.sequences.split(","))}
        self.max_height = config.ytvos_max_height
        self.save_overlays = config.save_overlays

    def _processing_size(self, height: int, width: int) -> tuple[int, int]:
        if not self.max_height or height <= self.max_height:
            return height, width
        return self.max_height, int(round(width * self.max_height / height))

    def run(self, encoder, preset: propagation.Preset, output_dir: str) -> dict:
        """Propagates every video; returns {'videos': n, 'zip': path}."""
        propagator = propagation.Propagator(preset)
        annotations_dir = os.path.join(output_dir, "Annotations")
        for video, first_frames in tqdm.tqdm(sorted(self.meta.items()), desc="ytvos videos"):
            frame_dir = os.path.join(self.root, "JPEGImages", video)
            names = [os.path.splitext(n)[0] for n in frames_io.list_frames(frame_dir)]
            start_masks = {}
            for object_id, frame in first_frames.items():
                if frame not in names:
                    raise ValueError(
                        f"{video}: object {object_id} starts at frame {frame}, which is not in {frame_dir}"
                    )
                mask = start_masks.get(frame)
                if mask is None:
                    mask = start_masks[frame] = np.zeros_like(self._annotation(video, frame))
                mask[self._annotation(video, frame) == object_id] = object_id
            palette = masks_io.read_palette(self._annotation_path(video, min(start_masks)))
            height, width = masks_io.read_mask(self._annotation_path(video, min(start_masks))).shape
            size = self._processing_size(height, width)
            frames = frames_io.read_frames([os.path.join(frame_dir, n + ".jpg") for n in names], size)
            seeds = {names.index(f): m for f, m in start_masks.items()}
            object_ids = sorted(first_frames)
            masks = np.zeros((len(names), height, width), np.uint8)
            with tqdm.tqdm(total=len(names) - min(seeds), desc=video, leave=False) as bar:
                for t, mask in propagation.segment_video(
                    encoder, propagator, frames, seeds, object_ids, output_size=(height, width), progress=bar
                ):
                    masks[t] = mask
            for name, mask in zip(names, masks):
                masks_io.write_mask(os.path.join(annotations_dir, video, name + ".png"), mask, palette)
            if self.save_overlays:
                _write_overlay(os.path.join(output_dir, "overlays", video + ".mp4"), frames, masks, palette)
        zip_path = os.path.join(output_dir, "submission.zip")
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for folder, _, files in os.walk(annotations_dir):
                for name in sorted(files):
                    path = os.path.join(folder, name)
                    archive.write(path, os.path.relpath(path, output_dir))
        print(f"Wrote {len(self.meta)} videos to {zip_path} (upload it to the YouTube-VOS evaluation server)")
        return {"videos": len(self.meta), "zip": zip_path}

    def _annotation_path(self, video: str, frame: str) -> str:
        return os.path.join(self.root, "Annotations", video, frame + ".png")

    def _annotation(self, video: str, frame: str) -> np.ndarray:
        return masks_io.read_mask(self._annotation_path(video, frame))


def _write_overlay(path: str, frames: np.ndarray, masks: np.ndarray, palette) -> None:
    height, width = masks.shape[1:]
    writer = overlays.OverlayWriter(path, height, width)
    for frame, mask in zip(frames, masks):
        writer.add_mask(
            cv2.resize(frame, (width, height)), mask, palette if palette is not None else masks_io.davis_palette()
        )
    writer.close()
