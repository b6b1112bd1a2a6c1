"""TAP-Vid metrics against hand-computed cases: occluded points, the query frame and earlier frames
excluded, strict thresholds, pooling over points, and the mean over videos."""

import numpy as np
import pytest

from mer_jax.evaluation.benchmarks.tapvid import metrics as tapvid_metrics


def one_point_case():
    """One point, 4 frames, query frame 1: only frames 2 and 3 are scored.

    Frame 2: visible, predicted visible 3 px away (within 4, 8, 16; not 1, 2).
    Frame 3: occluded, predicted visible (a false positive at every threshold).
    Frames 0 and 1 are wrong in every way and must not count.
    """
    gt_tracks = np.zeros((1, 4, 2))
    gt_occluded = np.array([[True, False, False, True]])
    pred_tracks = np.zeros((1, 4, 2))
    pred_tracks[0, 0] = [100.0, 100.0]
    pred_tracks[0, 1] = [50.0, 0.0]
    pred_tracks[0, 2] = [3.0, 0.0]
    pred_occluded = np.array([[False, True, False, False]])
    return np.array([1]), gt_occluded, gt_tracks, pred_occluded, pred_tracks


def test_one_point_by_hand():
    m = tapvid_metrics.video_metrics(*one_point_case())
    assert m["occlusion_accuracy"] == pytest.approx(1 / 2)  # frame 2 right, frame 3 wrong
    assert [m[f"pts_within_{d}"] for d in (1, 2, 4, 8, 16)] == [0, 0, 1, 1, 1]
    assert m["average_pts_within_thresh"] == pytest.approx(3 / 5)
    # Jaccard: 1 visible pair; false positives: frame 3 always, frame 2 where it is too far.
    assert [m[f"jaccard_{d}"] for d in (1, 2, 4, 8, 16)] == pytest.approx([0, 0, 1 / 2, 1 / 2, 1 / 2])
    assert m["average_jaccard"] == pytest.approx(1.5 / 5)
    assert list(m) == list(tapvid_metrics.KEYS)


def test_pairs_are_pooled_over_points_not_averaged():
    query, gt_occluded, gt_tracks, pred_occluded, pred_tracks = one_point_case()
    # A second point, queried at frame 0, tracked exactly and visible in frames 1-3 (3 pairs).
    query = np.array([1, 0])
    gt_occluded = np.concatenate([gt_occluded, np.zeros((1, 4), bool)])
    pred_occluded = np.concatenate([pred_occluded, np.zeros((1, 4), bool)])
    gt_tracks = np.concatenate([gt_tracks, np.full((1, 4, 2), 7.0)])
    pred_tracks = np.concatenate([pred_tracks, np.full((1, 4, 2), 7.0)])
    m = tapvid_metrics.video_metrics(query, gt_occluded, gt_tracks, pred_occluded, pred_tracks)
    assert m["occlusion_accuracy"] == pytest.approx(4 / 5)
    assert m["pts_within_1"] == pytest.approx(3 / 4) and m["pts_within_4"] == 1.0
    assert m["jaccard_1"] == pytest.approx(3 / 6) and m["jaccard_4"] == pytest.approx(4 / 5)
    assert m["average_jaccard"] == pytest.approx((0.5 + 0.5 + 0.8 + 0.8 + 0.8) / 5)
    assert m["average_pts_within_thresh"] == pytest.approx((0.75 + 0.75 + 1 + 1 + 1) / 5)


def test_thresholds_are_strict_and_occlusion_prediction_only_matters_for_jaccard():
    gt_tracks = np.zeros((1, 2, 2))
    pred_tracks = np.zeros((1, 2, 2))
    pred_tracks[0, 1] = [0.0, 4.0]  # exactly 4 px: not within 4
    visible = np.zeros((1, 2), bool)
    m = tapvid_metrics.video_metrics(np.array([0]), visible, gt_tracks, visible, pred_tracks)
    assert (m["pts_within_4"], m["pts_within_8"]) == (0.0, 1.0)
    # Predicted occluded where it is visible: position accuracy unchanged, no true positive.
    hidden = np.ones((1, 2), bool)
    m = tapvid_metrics.video_metrics(np.array([0]), visible, gt_tracks, hidden, pred_tracks)
    assert m["pts_within_8"] == 1.0 and m["jaccard_8"] == 0.0 and m["occlusion_accuracy"] == 0.0


def test_nothing_scored_is_nan_and_the_mean_over_videos_is_plain():
    # Queried at the last frame: no later frame to score.
    m = tapvid_metrics.video_metrics(np.array([2]), np.zeros((1, 3), bool), np.zeros((1, 3, 2)),
                                     np.zeros((1, 3), bool), np.zeros((1, 3, 2)))  # fmt: skip
    assert np.isnan(m["occlusion_accuracy"]) and np.isnan(m["average_jaccard"])
    a = dict.fromkeys(tapvid_metrics.KEYS, 0.2)
    b = dict.fromkeys(tapvid_metrics.KEYS, 0.6)
    assert tapvid_metrics.mean_over_videos([a, b]) == pytest.approx(dict.fromkeys(tapvid_metrics.KEYS, 0.4))
    with pytest.raises(ValueError, match="expected query_frames"):
        tapvid_metrics.video_metrics(np.array([0, 1]), np.zeros((1, 3), bool), np.zeros((1, 3, 2)),
                                     np.zeros((1, 3), bool), np.zeros((1, 3, 2)))  # fmt: skip


def test_scored_frames_are_after_the_query():
    np.testing.assert_array_equal(
        tapvid_metrics.scored_frames(np.array([0, 2]), 4), [[False, True, True, True], [False, False, False, True]]
    )
