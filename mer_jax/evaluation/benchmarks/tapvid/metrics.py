"""TAP-Vid point-tracking metrics, as the TAP-Vid benchmark defines them (Doersch et al., 2022).

Per video, over every (point, frame) pair after the point's query frame (query-first mode: the
query frame itself and the frames before it are not scored):
- occlusion accuracy: how often the predicted occlusion equals the ground truth;
- position accuracy at threshold d px: among pairs visible in the ground truth, the fraction
  predicted closer than d (ignoring the predicted occlusion); `average_pts_within_thresh` is its
  mean over d in 1, 2, 4, 8, 16;
- Jaccard at d: true positives / (ground-truth visible pairs + false positives), where a true
  positive is visible in both and closer than d, and a false positive is predicted visible but
  occluded in the ground truth or not closer than d; `average_jaccard` is its mean over d.
Positions are pixels of the frames resized to 256x256. The benchmark's number is the plain mean
of the per-video numbers over the videos (`mean_over_videos`).
"""

from typing import Mapping, Sequence

import numpy as np

THRESHOLDS = (1, 2, 4, 8, 16)
KEYS = (
    "average_jaccard",
    "average_pts_within_thresh",
    "occlusion_accuracy",
    *(f"jaccard_{d}" for d in THRESHOLDS),
    *(f"pts_within_{d}" for d in THRESHOLDS),
)


def scored_frames(query_frames: np.ndarray, num_frames: int) -> np.ndarray:
    """[N, T] bool: True at the frames after each point's query frame (query-first mode).

    Args:
      query_frames: [N] integer query frame of each point.
      num_frames: T.
    """
    return np.arange(num_frames)[None, :] > np.asarray(query_frames)[:, None]


def video_metrics(
    query_frames: np.ndarray,
    gt_occluded: np.ndarray,
    gt_tracks: np.ndarray,
    pred_occluded: np.ndarray,
    pred_tracks: np.ndarray,
) -> dict[str, float]:
    """The TAP-Vid metrics of one video.

    Args:
      query_frames: [N] integer query frame of each point.
      gt_occluded: [N, T] bool ground-truth occlusion.
      gt_tracks: [N, T, 2] ground-truth (x, y) pixel positions.
      pred_occluded: [N, T] bool predicted occlusion.
      pred_tracks: [N, T, 2] predicted (x, y) pixel positions.

    Returns:
      {key: float} for every key of KEYS; NaN where the denominator is 0 (no scored pair, or no
      scored visible pair).
    """
    gt_occluded, pred_occluded = np.asarray(gt_occluded, bool), np.asarray(pred_occluded, bool)
    gt_tracks, pred_tracks = np.asarray(gt_tracks, np.float64), np.asarray(pred_tracks, np.float64)
    num_points, num_frames = gt_occluded.shape
    if (
        np.shape(query_frames) != (num_points,)
        or pred_occluded.shape != gt_occluded.shape
        or gt_tracks.shape != (num_points, num_frames, 2)
        or pred_tracks.shape != gt_tracks.shape
    ):
        raise ValueError(
            "expected query_frames [N], occlusions [N, T] and tracks [N, T, 2]; got "
            f"{np.shape(query_frames)}, {gt_occluded.shape}, {pred_occluded.shape}, {gt_tracks.shape}, "
            f"{pred_tracks.shape}"
        )
    scored = scored_frames(query_frames, num_frames)
    visible, pred_visible = ~gt_occluded, ~pred_occluded
    distance2 = np.sum((pred_tracks - gt_tracks) ** 2, axis=-1)
    metrics = {"occlusion_accuracy": _ratio(np.sum((pred_occluded == gt_occluded) & scored), np.sum(scored))}
    gt_positives = np.sum(visible & scored)
    for d in THRESHOLDS:
        within = distance2 < d**2
        metrics[f"pts_within_{d}"] = _ratio(np.sum(within & visible & scored), gt_positives)
        true_positives = np.sum(within & visible & pred_visible & scored)
        false_positives = np.sum(pred_visible & (gt_occluded | ~within) & scored)
        metrics[f"jaccard_{d}"] = _ratio(true_positives, gt_positives + false_positives)
    metrics["average_jaccard"] = float(np.mean([metrics[f"jaccard_{d}"] for d in THRESHOLDS]))
    metrics["average_pts_within_thresh"] = float(np.mean([metrics[f"pts_within_{d}"] for d in THRESHOLDS]))
    return {key: metrics[key] for key in KEYS}


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


def mean_over_videos(per_video: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The benchmark's numbers: each key's plain mean over the videos (NaN if any video's is NaN,
    as a plain mean gives)."""
    if not per_video:
        raise ValueError("mean_over_videos needs at least one video")
    return {key: float(np.mean([video[key] for video in per_video])) for key in KEYS}
