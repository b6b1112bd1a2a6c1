"""Resizing frames and optical flow together (never cropping), so flow stays consistent with frames."""

import cv2
import numpy as np


def _interpolation(old: tuple[int, int], new: tuple[int, int]) -> int:
    """Area averaging when shrinking (no aliasing), bilinear when enlarging."""
    return cv2.INTER_AREA if new[0] <= old[0] and new[1] <= old[1] else cv2.INTER_LINEAR


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, C] -> [size[0], size[1], C], same dtype; returned as is when already that size."""
    if frame.shape[:2] == tuple(size):
        return frame
    return cv2.resize(frame, (size[1], size[0]), interpolation=_interpolation(frame.shape[:2], size))


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Flow [H, W, 2] (dx, dy pixels) -> float32 [size[0], size[1], 2] with vectors in new pixels.

    The field is resampled like its frame and dx, dy are scaled by the width and height ratios.
    """
    flow = flow.astype(np.float32)
    height, width = flow.shape[:2]
    if (height, width) == tuple(size):
        return flow
    resized = cv2.resize(flow, (size[1], size[0]), interpolation=_interpolation((height, width), size))
    return resized * np.array([size[1] / width, size[0] / height], np.float32)


def processing_size(height: int, width: int, max_height: int | None) -> tuple[int, int]:
    """(height, width), or the same aspect at `max_height` rows when taller (None: never resized)."""
    if max_height is None or height <= max_height:
        return height, width
    return max_height, int(round(width * max_height / height))
