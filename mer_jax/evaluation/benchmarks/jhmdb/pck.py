"""PCK (percentage of correct keypoints) for JHMDB pose propagation, as in docs/method.md, 'Benchmarks'.

Per frame the reference length is 0.6 x the diagonal of the bounding box of that frame's visible
ground-truth joints; a visible joint is correct when its prediction lies closer than threshold x reference.
Accuracy is pooled per joint over all frames, then averaged over joints. Frame 0 of each video is the
given annotation and is not scored.
"""

import warnings
from collections.abc import Sequence

import numpy as np

JOINT_NAMES = (
    "neck",
    "belly",
    "face",
    "right shoulder",
    "left shoulder",
    "right hip",
    "left hip",
    "right elbow",
    "left elbow",
    "right knee",
    "left knee",
    "right wrist",
    "left wrist",
    "right ankle",
    "left ankle",
)

_REFERENCE_SCALE = 0.6
_MIN_VISIBLE = 2


def _key(threshold: float) -> str:
    return f"PCK@{threshold:g}"


def pck(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    thresholds: Sequence[float] = (0.1, 0.2),
) -> dict:
    """Computes PCK over a set of frames.

    Only visible joints count. Frames with fewer than 2 visible joints contribute nothing (their box has
    no diagonal). Per-joint accuracy is correct / visible over all scored frames; a joint never visible is
    NaN and left out of the mean over joints.

    Args:
      pred: [N, J, 2] predicted (x, y) pixel coordinates (J = 15 for JHMDB).
      gt: [N, J, 2] ground-truth (x, y) pixel coordinates.
      visible: [N, J] bool, ground-truth visibility.
      thresholds: fractions of the reference length.

    Returns:
      {"PCK@<t>": float mean over joints, ..., "per_joint": {"PCK@<t>": [J] float64 per-joint accuracy}},
      one key per threshold (e.g. "PCK@0.1", "PCK@0.2"); NaN where nothing was scored.
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    visible = np.asarray(visible, bool)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2 or visible.shape != gt.shape[:2]:
        raise ValueError(
            f"expected pred, gt [N, J, 2] and visible [N, J]; got {pred.shape}, {gt.shape}, {visible.shape}"
        )
    visible = visible & (visible.sum(1, keepdims=True) >= _MIN_VISIBLE)
    box_min = np.where(visible[..., None], gt, np.inf).min(1)  # [N, 2]
    box_max = np.where(visible[..., None], gt, -np.inf).max(1)
    scored = visible.any(1)
    diagonal = np.linalg.norm(np.where(scored[:, None], box_max - box_min, 0.0), axis=-1)  # [N]
    reference = _REFERENCE_SCALE * diagonal
    distance = np.linalg.norm(pred - gt, axis=-1)  # [N, J]
    counts = visible.sum(0)  # [J]
    result: dict = {"per_joint": {}}
    for threshold in thresholds:
        correct = (visible & (distance < threshold * reference[:, None])).sum(0)
        per_joint = np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)
        with warnings.catch_warnings():
            # All joints unscored: the mean is NaN by design, not worth a warning.
            warnings.simplefilter("ignore", RuntimeWarning)
            result[_key(threshold)] = float(np.nanmean(per_joint))
        result["per_joint"][_key(threshold)] = per_joint
    return result


def pck_for_videos(
    videos: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    thresholds: Sequence[float] = (0.1, 0.2),
) -> dict:
    """Computes PCK pooled over the frames of several videos, skipping each video's frame 0.

    Args:
      videos: (pred [T, J, 2], gt [T, J, 2], visible [T, J]) per video; T may differ between videos.
      thresholds: fractions of the reference length.

    Returns:
      The dict of `pck` over frames 1..T-1 of every video.
    """
    if not videos:
        raise ValueError("pck_for_videos needs at least one video")
    pred, gt, visible = (np.concatenate([np.asarray(video[i])[1:] for video in videos]) for i in range(3))
    return pck(pred, gt, visible, thresholds)
