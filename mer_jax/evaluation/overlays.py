"""Predictions drawn over frames, for looking at failures: masks, joints and points, and the MP4
videos of them (`track`, every evaluator's `save_overlays`, the report's thumbnails).

A mask is drawn so that it reads at a glance whatever the file's own palette: each object id in
its DAVIS palette colour (`masks_io.davis_palette`: 1 red, 2 green, 3 olive, ...) at half
opacity, its inner edge in the full colour, the background untouched (`draw_mask`). The palette
of a user's mask PNG is not used: one saved without colours (Pillow's default) gives id 1 black
or (1, 1, 1), which drew as a faint grey tint.
"""

import os

import cv2
import numpy as np

from mer_jax.evaluation import masks_io

ALPHA = 0.5  # Opacity of an object's colour over the frame.
CONTOUR_PX = 2  # Width of the full-colour edge drawn inside each object.
JOINT_COLOUR = (255, 64, 64)


def draw_mask(
    frame: np.ndarray, mask: np.ndarray, palette: np.ndarray | None = None, contour_px: int = CONTOUR_PX
) -> np.ndarray:
    """The frame with each object of the mask in its palette colour.

    Inside an object (id k > 0) a pixel is round((1 - ALPHA) frame + ALPHA palette[k]) (half to
    even); a pixel of the object within `contour_px` pixels (a square neighbourhood) of another id
    is palette[k] itself; background (id 0) pixels are the frame's. The image's border is not an
    edge.

    Args:
      frame: [H, W, 3] uint8 RGB.
      mask: [H, W] integer ids in [0, 255].
      palette: [256, 3] uint8 RGB colours (None: the DAVIS palette).
      contour_px: width of the edge (0: none).

    Returns:
      [H, W, 3] uint8 RGB (a new array).
    """
    frame, mask = np.asarray(frame), np.asarray(mask)
    if frame.shape != (*mask.shape, 3):
        raise ValueError(f"frame {frame.shape} and mask {mask.shape} differ in size (expected [H, W, 3] and [H, W])")
    palette = masks_io.davis_palette() if palette is None else np.asarray(palette, np.uint8)
    ids = mask.astype(np.uint8)
    colours = palette[ids]
    inside = ids[..., None] > 0
    blended = np.round((1 - ALPHA) * frame.astype(np.float64) + ALPHA * colours).astype(np.uint8)
    drawn = np.where(inside, blended, frame)
    if contour_px > 0:
        # Within the window the ids differ iff their minimum and maximum do; cv2 leaves pixels
        # outside the image out of both, so the image border is no edge.
        window = np.ones((2 * contour_px + 1, 2 * contour_px + 1), np.uint8)
        edge = inside & (cv2.erode(ids, window) != cv2.dilate(ids, window))[..., None]
        drawn = np.where(edge, colours, drawn)
    return drawn.astype(np.uint8)


def draw_joints(frame: np.ndarray, joints: np.ndarray, radius: int = 3, colour=JOINT_COLOUR) -> np.ndarray:
    """The frame [H, W, 3] uint8 RGB (a copy) with a filled dot at each joint [J, 2] (x, y) pixel."""
    canvas = np.array(frame, np.uint8)
    for x, y in np.round(joints).astype(int):
        cv2.circle(canvas, (int(x), int(y)), radius, colour, -1)
    return canvas


def point_colour(point_id: int) -> tuple[int, int, int]:
    """The RGB colour of point `point_id`: hues 47 OpenCV steps (of 180) apart, so neighbours differ."""
    hue = np.uint8((int(point_id) * 47) % 180)
    return tuple(int(c) for c in cv2.cvtColor(np.array([[[hue, 255, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0])


def draw_points(
    frame: np.ndarray, points: np.ndarray, visible: np.ndarray, ids: np.ndarray, radius: int = 2
) -> np.ndarray:
    """The frame [H, W, 3] uint8 RGB (a copy) with points [N, 2] (x, y) pixels drawn: a filled
    dot where visible [N] bool, else a ring; ids [N] int give each point its colour (`point_colour`:
    the same point keeps its colour)."""
    canvas = np.array(frame, np.uint8)
    for (x, y), seen, point_id in zip(np.round(points).astype(int), visible, ids):
        cv2.circle(canvas, (int(x), int(y)), radius, point_colour(point_id), -1 if seen else 1)
    return canvas


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

    def add_mask(self, frame: np.ndarray, mask: np.ndarray, palette: np.ndarray | None = None) -> None:
        """frame: [H, W, 3] uint8 RGB; mask: [H, W] ids; palette: as `draw_mask`'s."""
        self._write(draw_mask(frame, mask, palette))

    def add_joints(self, frame: np.ndarray, joints: np.ndarray) -> None:
        """frame: [H, W, 3] uint8 RGB; joints: [J, 2] (x, y) pixels (`draw_joints`)."""
        self._write(draw_joints(frame, joints))

    def add_points(self, frame: np.ndarray, points: np.ndarray, visible: np.ndarray, ids: np.ndarray) -> None:
        """frame: [H, W, 3] uint8 RGB; points, visible, ids: as `draw_points`'s."""
        self._write(draw_points(frame, points, visible, ids))

    def _write(self, rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(rgb[: self._size[0], : self._size[1]]), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()
