"""Reading video frames from image folders, with errors that name the file."""

import os

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_frames(folder: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[str]:
    """Sorted frame file names (not paths) in `folder`.

    Raises:
      FileNotFoundError: the folder is missing or holds no frame.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"frame folder {folder} does not exist")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(extensions))
    if not names:
        raise FileNotFoundError(f"no {'/'.join(extensions)} frames in {folder}")
    return names


def read_frame(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """One frame as uint8 RGB [H, W, 3], resized (area) to size=(height, width) if given.

    Raises:
      FileNotFoundError / ValueError: missing or undecodable image (naming the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"frame {path} does not exist")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image {path} (corrupt or not an image)")
    if size is not None and bgr.shape[:2] != tuple(size):
        bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_frames(paths: list[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 RGB; all must have the same size (unless resized to `size`)."""
    frames = [read_frame(p, size) for p in paths]
    height, width = frames[0].shape[:2]
    for path, frame in zip(paths, frames):
        if frame.shape[:2] != (height, width):
            raise ValueError(f"{path} is {frame.shape[1]}x{frame.shape[0]}, unlike {paths[0]} ({width}x{height})")
    return np.stack(frames)
