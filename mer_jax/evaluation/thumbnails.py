"""The overlay thumbnails of the HTML report (`report_html.py`): which frames of a video it shows
(first, middle, last, and the frame with the worst score) and each drawn small, with the
drawing of the overlay videos (`overlays.py`), at most `WIDTH` pixels wide."""

from typing import NamedTuple

import cv2
import numpy as np

from mer_jax.evaluation import overlays

WIDTH = 160  # Thumbnail width in pixels (narrower frames are kept at their size).


class Thumbnail(NamedTuple):
    """One small picture of a strip.

    Attributes:
      image: [h, w, 3] uint8 RGB.
      caption: what it shows, e.g. 'worst, frame 17, J 0.312'.
    """

    image: np.ndarray
    caption: str


def pick_frames(per_frame: np.ndarray, score_name: str) -> list[tuple[int, str]]:
    """The frames a strip shows: first (0), middle (T // 2), last (T - 1) and worst.

    Args:
      per_frame: [T] float score of each frame, NaN where the frame is not scored (e.g. DAVIS's
        first and last).
      score_name: the score's name in captions ('J').

    Returns:
      [(t, caption)]: the three, then the scored frame with the lowest score (the earliest of
      equal ones; left out when no frame is scored). A caption names the frame and its score
      where it has one: 'worst, frame 17, J 0.312'.
    """
    per_frame = np.asarray(per_frame, np.float64)
    last = len(per_frame) - 1
    picks = [(0, "first"), (len(per_frame) // 2, "middle"), (last, "last")]
    if np.isfinite(per_frame).any():
        picks.append((int(np.nanargmin(per_frame)), "worst"))

    def caption(t: int, label: str) -> str:
        score = f", {score_name} {per_frame[t]:.3f}" if np.isfinite(per_frame[t]) else ""
        return f"{label}, frame {t}{score}"

    return [(t, caption(t, label)) for t, label in picks]


def thumbnail_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of a frame's thumbnail: WIDTH wide, the aspect kept (a narrower frame: its own size)."""
    if width <= WIDTH:
        return height, width
    return max(1, round(height * WIDTH / width)), WIDTH


def _shrink(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """(the frame at its thumbnail size (area resampling), the scale factor)."""
    height, width = frame.shape[:2]
    small_height, small_width = thumbnail_size(height, width)
    if (small_height, small_width) == (height, width):
        return np.asarray(frame, np.uint8), 1.0
    return cv2.resize(frame, (small_width, small_height), interpolation=cv2.INTER_AREA), small_width / width


def _scaled(points: np.ndarray, scale: float) -> np.ndarray:
    """Pixel-centre (x, y) coordinates [..., 2] of a frame at the thumbnail's scale."""
    return (np.asarray(points, np.float64) + 0.5) * scale - 0.5


def mask_thumbnail(frame: np.ndarray, mask: np.ndarray, caption: str) -> Thumbnail:
    """A frame [H, W, 3] uint8 RGB with its id mask [H', W'] (nearest-resized to the thumbnail)
    drawn as `overlays.draw_mask` draws it, with a 1-px edge."""
    small, _ = _shrink(frame)
    ids = cv2.resize(np.asarray(mask, np.uint8), small.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    return Thumbnail(overlays.draw_mask(small, ids, contour_px=1), caption)


def joints_thumbnail(frame: np.ndarray, joints: np.ndarray, caption: str) -> Thumbnail:
    """A frame [H, W, 3] uint8 RGB with joints [J, 2] (x, y) pixels drawn (`overlays.draw_joints`)."""
    small, scale = _shrink(frame)
    return Thumbnail(overlays.draw_joints(small, _scaled(joints, scale), radius=2), caption)


def points_thumbnail(
    frame: np.ndarray, points: np.ndarray, visible: np.ndarray, ids: np.ndarray, caption: str
) -> Thumbnail:
    """A frame [H, W, 3] uint8 RGB with points [N, 2] (x, y) pixels drawn (`overlays.draw_points`:
    a dot where visible [N], else a ring; ids [N] their colours)."""
    small, scale = _shrink(frame)
    return Thumbnail(overlays.draw_points(small, _scaled(points, scale), visible, ids), caption)
