"""MP4 videos of predictions drawn over the frames, for looking at failures."""

import os

import cv2
import numpy as np

_ALPHA = 0.5


class OverlayWriter:
    """Writes frames with a mask, joints or points overlaid to an MP4 (mp4v), one frame at a time.

    The MPEG-4 encoder takes even sides only (OpenCV otherwise writes a video narrower than its
    frames), so an odd side loses its last row or column.
    """

    def __init__(self, path: str, height: int, width: int, fps: float = 10.0):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._size = (height - height % 2, width - width % 2)
        self._writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, self._size[::-1])
        if not self._writer.isOpened():
            raise OSError(f"OpenCV cannot write MP4 video to {path}")

    def add_mask(self, frame: np.ndarray, mask: np.ndarray, palette: np.ndarray) -> None:
        """frame: [H, W, 3] uint8 RGB; mask: [H, W] ids; palette: [256, 3] RGB colours."""
        colours = palette[mask].astype(np.float32)
        blended = np.where(mask[..., None] > 0, (1 - _ALPHA) * frame + _ALPHA * colours, frame)
        self._write(blended.astype(np.uint8))

    def add_joints(self, frame: np.ndarray, joints: np.ndarray, colour=(255, 64, 64)) -> None:
        """frame: [H, W, 3] uint8 RGB; joints: [J, 2] (x, y) pixels."""
        canvas = np.ascontiguousarray(frame)
        for x, y in np.round(joints).astype(int):
            cv2.circle(canvas, (int(x), int(y)), 3, colour, -1)
        self._write(canvas)

    def add_points(self, frame: np.ndarray, points: np.ndarray, visible: np.ndarray, ids: np.ndarray) -> None:
        """frame: [H, W, 3] uint8 RGB; points: [N, 2] (x, y) pixels; visible: [N] bool (a filled
        dot, else a ring); ids: [N] int, each point's colour index (the same point keeps its colour)."""
        canvas = np.ascontiguousarray(frame)
        for (x, y), seen, point_id in zip(np.round(points).astype(int), visible, ids):
            hue = np.uint8((int(point_id) * 47) % 180)  # OpenCV hue range; neighbours far apart
            rgb = cv2.cvtColor(np.array([[[hue, 255, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
            cv2.circle(canvas, (int(x), int(y)), 2, tuple(int(c) for c in rgb), -1 if seen else 1)
        self._write(canvas)

    def _write(self, rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(rgb[: self._size[0], : self._size[1]]), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()
