"""JHMDB on disk: the split-1 test list, one video's frames and 2-D joints (docs/method.md,
'Benchmarks'); `heatmaps.py` turns the joints into label maps to propagate and back.

Layout (users download it): `<root>/Rename_Images/<class>/<video>/00001.png` (320x240 RGB frames),
`<root>/joint_positions/<class>/<video>/joint_positions.mat` (field `pos_img`, shape (2, 15, T), 1-based
MATLAB pixel coordinates x, y) and the official split files `<root>/splits/<class>_test_split<k>.txt`
(lines `<video>.avi <1|2>`, 2 = test).

Coordinates here are 0-based (x, y) pixel centres.
"""

import os
import re
from typing import NamedTuple

import numpy as np
import scipy.io
from PIL import Image

NUM_JOINTS = 15

_SPLITS_DIR = "splits"
_FRAMES_DIR = "Rename_Images"
_JOINTS_DIR = "joint_positions"
_JOINTS_FILE = "joint_positions.mat"
_TEST_LABEL = "2"


class JhmdbVideo(NamedTuple):
    """One JHMDB video with its joint annotations.

    Attributes:
      frames: [T, H, W, 3] uint8 RGB frames.
      joints: [T, 15, 2] float32 0-based (x, y) pixel coordinates.
      visible: [T, 15] bool, True where the joint lies inside the image.
    """

    frames: np.ndarray
    joints: np.ndarray
    visible: np.ndarray


def list_test_videos(root: str | os.PathLike, split: int = 1) -> list[tuple[str, str]]:
    """Lists the test videos of one official JHMDB split.

    Args:
      root: JHMDB root folder (holding `splits/`).
      split: split number (1, 2 or 3).

    Returns:
      Sorted (class, video) pairs of the lines labelled 2 (test) in `splits/<class>_test_split<split>.txt`;
      the video name has its `.avi` suffix removed.

    Raises:
      FileNotFoundError: the splits folder or its split files are missing.
      ValueError: a split file has a malformed line.
    """
    splits_dir = os.path.join(root, _SPLITS_DIR)
    if not os.path.isdir(splits_dir):
        raise FileNotFoundError(f"JHMDB split folder not found: {splits_dir} (expected <class>_test_split{split}.txt)")
    suffix = f"_test_split{split}.txt"
    split_files = sorted(name for name in os.listdir(splits_dir) if name.endswith(suffix))
    if not split_files:
        raise FileNotFoundError(f"no JHMDB split files <class>{suffix} in {splits_dir}")
    videos = []
    for name in split_files:
        cls = name[: -len(suffix)]
        path = os.path.join(splits_dir, name)
        with open(path) as f:
            for line_number, line in enumerate(f, start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2 or fields[1] not in ("1", "2"):
                    raise ValueError(f"{path}:{line_number}: expected '<video>.avi <1|2>', got {line.strip()!r}")
                if fields[1] == _TEST_LABEL:
                    videos.append((cls, fields[0].removesuffix(".avi")))
    return sorted(videos)


def _read_pos_img(path: str) -> np.ndarray:
    """Reads `pos_img` from a JHMDB joint file.

    Args:
      path: the `joint_positions.mat` file.

    Returns:
      [T, 15, 2] float32 0-based (x, y) pixel coordinates.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"JHMDB joint file not found: {path}")
    mat = scipy.io.loadmat(path)
    if "pos_img" not in mat:
        raise ValueError(f"{path} has no field 'pos_img' (fields: {sorted(k for k in mat if not k.startswith('__'))})")
    pos_img = np.asarray(mat["pos_img"])
    if pos_img.ndim != 3 or pos_img.shape[:2] != (2, NUM_JOINTS):
        raise ValueError(f"{path}: pos_img has shape {pos_img.shape}, expected (2, {NUM_JOINTS}, T)")
    return (np.transpose(pos_img, (2, 1, 0)) - 1.0).astype(np.float32)


def _read_frame(path: str) -> np.ndarray:
    """Reads one frame as [H, W, 3] uint8 RGB."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise OSError(f"cannot read JHMDB frame {path}: {error}") from error


def read_video(root: str | os.PathLike, cls: str, video: str) -> JhmdbVideo:
    """Reads one JHMDB video's frames and joints.

    A joint is visible when it lies inside the image: 0 <= x < W and 0 <= y < H in 0-based pixel
    coordinates (JHMDB marks no occlusion; joints of people cut by the frame edge fall outside).
    Frames are matched to joints by name: image `00001.png` is annotated frame 1, and the images must
    be `00001.png` ... `<N>.png` without a gap. Some JHMDB joint files have more frames than the video
    has images; the annotations past the last image are dropped, so N frames are returned.

    Args:
      root: JHMDB root folder.
      cls: action class, e.g. "brush_hair".
      video: video name without extension.

    Returns:
      The video: frames [T, H, W, 3] uint8, joints [T, 15, 2] float32 0-based (x, y), visible [T, 15] bool.

    Raises:
      FileNotFoundError: the frame folder, its PNG frames, a frame within the numbering (a gap, the
        first frame among them) or the joint file are missing.
      ValueError: a PNG is not named `<5 digits>.png`; the joint file lacks `pos_img`, has the wrong
        shape or annotates fewer frames than there are images; frames differ in size.
      OSError: a frame cannot be decoded.
    """
    frames_dir = os.path.join(root, _FRAMES_DIR, cls, video)
    if not os.path.isdir(frames_dir):
        raise FileNotFoundError(f"JHMDB frame folder not found: {frames_dir}")
    frame_names = sorted(name for name in os.listdir(frames_dir) if name.endswith(".png"))
    if not frame_names:
        raise FileNotFoundError(f"no PNG frames in {frames_dir}")
    unnumbered = [name for name in frame_names if not re.fullmatch(r"\d{5}\.png", name) or name == "00000.png"]
    if unnumbered:
        raise ValueError(
            f"JHMDB frames are named 00001.png, 00002.png, ... (matched to the joints by number), but "
            f"{frames_dir} holds {unnumbered[:5]}: move other files out of the frame folder."
        )
    expected = [f"{t:05d}.png" for t in range(1, int(frame_names[-1][:5]) + 1)]
    missing = sorted(set(expected) - set(frame_names))
    if missing:
        raise FileNotFoundError(
            f"JHMDB video {cls}/{video}: frames are matched to the joints by number, but {len(missing)} frame(s) "
            f"are missing: {', '.join(os.path.join(frames_dir, name) for name in missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}. Restore them from the JHMDB download."
        )
    joints_path = os.path.join(root, _JOINTS_DIR, cls, video, _JOINTS_FILE)
    joints = _read_pos_img(joints_path)
    num_frames = len(frame_names)
    if joints.shape[0] < num_frames:
        raise ValueError(
            f"JHMDB video {cls}/{video}: {joints_path} annotates {joints.shape[0]} frames but {frames_dir} has "
            f"{num_frames}; {os.path.join(frames_dir, frame_names[joints.shape[0]])} and later have no joints. "
            "Restore the joint file (or the frames) from the JHMDB download."
        )
    frames = [_read_frame(os.path.join(frames_dir, name)) for name in frame_names]
    if len({frame.shape for frame in frames}) != 1:
        raise ValueError(f"frames of {frames_dir} differ in size: {sorted({frame.shape for frame in frames})}")
    frames = np.stack(frames)
    joints = joints[:num_frames]
    height, width = frames.shape[1:3]
    x, y = joints[..., 0], joints[..., 1]
    visible = np.isfinite(joints).all(-1) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return JhmdbVideo(frames=frames, joints=joints, visible=visible)
