"""Finding and decoding the videos under one or more frames roots: folders of frames or MP4/AVI files.

Every error names the video and the file, so a user can find and fix (or skip) it.
"""

import os
from typing import NamedTuple, Sequence

import cv2
import numpy as np

from mer_jax.data import frames_io

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
DATASETS = ("ytvos", "davis", "folder")


class BadVideoError(ValueError):
    """A video that cannot be used: its message names the video and the offending file."""


class VideoEntry(NamedTuple):
    """One video: its name (used for flow files and in the dataset) and its folder or file."""

    name: str
    path: str


def _davis_split_file(frames_root: str) -> str:
    """DAVIS/ImageSets/2017/train.txt for frames_root = DAVIS/JPEGImages/480p."""
    davis_root = os.path.dirname(os.path.dirname(os.path.normpath(frames_root)))
    return os.path.join(davis_root, "ImageSets", "2017", "train.txt")


def _scan_root(frames_root: str, dataset: str) -> dict[str, VideoEntry]:
    """{name: entry} of the frame folders (and, for `folder`, video files) directly in frames_root."""
    if not os.path.isdir(frames_root):
        raise FileNotFoundError(f"--frames_root {frames_root} is not a folder of videos")
    entries = {}
    for item in sorted(os.listdir(frames_root)):
        path = os.path.join(frames_root, item)
        if os.path.isdir(path):
            entries[item] = VideoEntry(item, path)
        elif dataset == "folder" and item.lower().endswith(VIDEO_EXTENSIONS):
            stem = os.path.splitext(item)[0]
            if stem in entries:
                raise ValueError(f"two videos are named {stem!r} in {frames_root}: rename one")
            entries[stem] = VideoEntry(stem, path)
    return entries


def _keep_listed(entries: dict[str, VideoEntry], video_list: str, where: str) -> dict[str, VideoEntry]:
    """The entries named in the file video_list (one name a line); all must exist."""
    if not os.path.isfile(video_list):
        raise FileNotFoundError(f"video list {video_list} does not exist (set --video_list)")
    with open(video_list) as f:
        wanted = [line.strip() for line in f if line.strip()]
    missing = [name for name in wanted if name not in entries]
    if missing:
        raise FileNotFoundError(f"{len(missing)} videos of {video_list} are not in {where}: {missing[:5]}")
    return {name: entries[name] for name in wanted}


def list_videos(
    frames_root: str | Sequence[str], dataset: str = "folder", video_list: str | None = None
) -> list[VideoEntry]:
    """The videos of one frames root, or of several pooled, sorted by name.

    Args:
      frames_root: a folder, or a sequence of folders whose videos are pooled (the command lines
        take them comma-separated). `ytvos`: YouTube-VOS `train_all_frames/JPEGImages` (one
        frame folder per video); `davis`: DAVIS `JPEGImages/480p`; `folder`: frame folders and/or
        video files.
      dataset: one of DATASETS.
      video_list: a text file of video names to keep (one per line), over all the roots. For
        `davis` each root defaults to its 2017 train split, `ImageSets/2017/train.txt` beside
        `JPEGImages`.

    Raises:
      FileNotFoundError: a frames root, the list, or a listed video is missing, or nothing is found.
      ValueError: two videos have the same name (in one root, or in two of them): names key the
        flow files and the dataset.
    """
    if dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    roots = [frames_root] if isinstance(frames_root, str) else list(frames_root)
    if not roots:
        raise ValueError("--frames_root names no folder")
    entries: dict[str, VideoEntry] = {}
    for root in roots:
        found = _scan_root(root, dataset)
        if dataset == "davis" and video_list is None:
            found = _keep_listed(found, _davis_split_file(root), root)
        for name, entry in found.items():
            if name in entries:
                raise ValueError(
                    f"two videos are named {name!r}: {entries[name].path} and {entry.path}. Video names key the "
                    "flow files and the dataset: rename one"
                )
            entries[name] = entry
    if video_list is not None:
        entries = _keep_listed(entries, video_list, ", ".join(roots))
    if not entries:
        kind = "video folders" + (" or files" if dataset == "folder" else "")
        raise FileNotFoundError(f"no {kind} in {', '.join(roots)}")
    return [entries[name] for name in sorted(entries)]


def _read_video_file(path: str) -> np.ndarray:
    """All frames of an MP4/AVI file as uint8 RGB [T, H, W, 3]."""
    capture = cv2.VideoCapture(path)
    frames = []
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise ValueError(f"cannot decode video file {path} (corrupt, empty or an unsupported codec)")
    return np.stack(frames)


def read_video(entry: VideoEntry) -> tuple[np.ndarray, list[str]]:
    """(frames uint8 RGB [T, H, W, 3], frame names) of one video.

    Frame names are the image file names of a folder, or `00000`, `00001`, ... for a video file.

    Raises:
      BadVideoError: a frame or the file is missing or cannot be decoded, or frame sizes differ.
    """
    try:
        if os.path.isdir(entry.path):
            names = frames_io.list_frames(entry.path)
            return frames_io.read_frames([os.path.join(entry.path, n) for n in names]), names
        frames = _read_video_file(entry.path)
        return frames, [f"{t:05d}" for t in range(len(frames))]
    except (OSError, ValueError) as e:
        raise BadVideoError(f"video {entry.name}: {e}") from e
