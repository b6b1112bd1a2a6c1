"""Tests for the DAVIS metrics (davis_metrics.py) on hand-computed cases and scipy references."""

import math
import warnings

import cv2
import numpy as np
import pytest
from scipy import ndimage

from mer_jax.evaluation.benchmarks.davis import metrics as davis_metrics


def _rect(shape, rows, cols):
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return mask


# ----------------------------------------------------------------------------- jaccard


def test_jaccard_hand_cases():
    empty = np.zeros((1, 4, 4), bool)
    assert davis_metrics.jaccard(empty, empty)[0] == 1.0
    gt = _rect((4, 4), (0, 1), (0, 1))[None]
    assert davis_metrics.jaccard(gt, _rect((4, 4), (2, 3), (2, 3))[None])[0] == 0.0
    pred = _rect((4, 4), (0, 1), (1, 2))[None]
    assert davis_metrics.jaccard(gt, pred)[0] == pytest.approx(2 / 6)
    void = np.zeros_like(gt)
    void[0, :, 2] = True  # the prediction's own column
    assert davis_metrics.jaccard(gt, pred, void)[0] == pytest.approx(2 / 4)
    assert davis_metrics.jaccard(gt, pred, np.ones_like(gt))[0] == 1.0
    assert davis_metrics.jaccard(gt, empty)[0] == 0.0


def test_jaccard_per_frame():
    gt = np.stack([_rect((4, 4), (0, 1), (0, 1)), np.zeros((4, 4), bool), _rect((4, 4), (0, 3), (0, 3))])
    pred = np.stack([_rect((4, 4), (0, 1), (0, 1)), np.zeros((4, 4), bool), _rect((4, 4), (0, 1), (0, 3))])
    np.testing.assert_allclose(davis_metrics.jaccard(gt, pred), [1.0, 1.0, 0.5])


# ----------------------------------------------------------------------------- boundaries


def test_seg_to_boundary_square():
    seg = _rect((5, 5), (1, 3), (1, 3))
    expected = np.array(
        [
            [1, 1, 1, 1, 0],
            [1, 0, 0, 1, 0],
            [1, 0, 0, 1, 0],
            [1, 1, 1, 1, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(davis_metrics.seg_to_boundary(seg), expected)


def test_seg_to_boundary_last_row_column_and_corner():
    seg = np.zeros((3, 3), bool)
    seg[2, 2] = True
    expected = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(davis_metrics.seg_to_boundary(seg), expected)
    assert not davis_metrics.seg_to_boundary(np.ones((3, 3), bool)).any()


def test_disk():
    np.testing.assert_array_equal(davis_metrics.disk(0), [[True]])
    np.testing.assert_array_equal(davis_metrics.disk(1), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool))
    expected = np.array(
        [
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(davis_metrics.disk(2), expected)
    np.testing.assert_array_equal(davis_metrics.disk(8.0), davis_metrics.disk(8))
    assert davis_metrics.disk(8).shape == (17, 17)


def test_cv2_dilation_matches_binary_dilation_at_borders():
    # boundary_f dilates with cv2 as the official toolkit does; outside-image pixels must not count.
    rng = np.random.default_rng(0)
    for radius in (1, 2, 3, 5):
        footprint = davis_metrics.disk(radius)
        for _ in range(5):
            points = rng.random((13, 17)) < 0.05
            points[0, 0] = points[-1, 5] = points[6, -1] = True
            via_cv2 = cv2.dilate(points.astype(np.uint8), footprint.astype(np.uint8)).astype(bool)
            np.testing.assert_array_equal(via_cv2, ndimage.binary_dilation(points, footprint))


def test_boundary_f_shifted_square():
    gt = _rect((20, 20), (5, 14), (5, 14))
    for shift in range(4):
        assert davis_metrics.boundary_f(gt, np.roll(gt, shift, axis=1), bound_th=3) == 1.0
    # Shift 3, tolerance 1 px: of each 40-px outline, 9 + 9 top/bottom pixels and 2 side pixels match.
    assert davis_metrics.boundary_f(gt, np.roll(gt, 3, axis=1), bound_th=1) == pytest.approx(0.5)


def test_boundary_f_inner_square():
    gt = _rect((20, 20), (5, 14), (5, 14))
    pred = _rect((20, 20), (7, 12), (7, 12))
    # Tolerance 2: every predicted outline pixel is 2 px from the gt outline (P = 1); 28 of the 40 gt
    # outline pixels (7 per side) lie within 2 px of the predicted outline (R = 0.7).
    assert davis_metrics.boundary_f(gt, pred, bound_th=2) == pytest.approx(2 * 0.7 / 1.7)
    assert davis_metrics.boundary_f(gt, pred, bound_th=1) == 0.0


def test_boundary_f_default_tolerance_uses_ceil_of_diagonal():
    # 100 x 100: ceil(0.008 * 141.4) = 2 px.
    gt = _rect((100, 100), (30, 60), (30, 60))
    assert davis_metrics.boundary_f(gt, np.roll(gt, 2, axis=1)) == 1.0
    assert davis_metrics.boundary_f(gt, np.roll(gt, 3, axis=1)) < 1.0


def test_boundary_f_special_cases():
    empty = np.zeros((10, 10), bool)
    square = _rect((10, 10), (2, 5), (2, 5))
    full = np.ones((10, 10), bool)
    assert davis_metrics.boundary_f(square, empty) == 0.0  # P = 1, R = 0
    assert davis_metrics.boundary_f(empty, square) == 0.0  # P = 0, R = 1
    assert davis_metrics.boundary_f(empty, empty) == 1.0
    assert davis_metrics.boundary_f(full, full) == 1.0  # no boundary on either side
    assert davis_metrics.boundary_f(full, square) == 0.0


def test_boundary_f_void():
    gt = _rect((20, 20), (5, 14), (5, 14))
    pred = gt | _rect((20, 20), (0, 2), (16, 19))
    void = _rect((20, 20), (0, 3), (15, 19))
    assert davis_metrics.boundary_f(gt, pred, bound_th=1) < 1.0
    assert davis_metrics.boundary_f(gt, pred, void, bound_th=1) == 1.0


# ----------------------------------------------------------------------------- statistics


def test_decay_bins():
    assert davis_metrics.decay_bins(10) == [slice(0, 3), slice(2, 6), slice(5, 8), slice(7, 10)]
    assert davis_metrics.decay_bins(4) == [slice(0, 2), slice(1, 3), slice(2, 3), slice(2, 4)]
    # The official uint8 bin ids wrap past 256 frames: 299 -> 43 empties the last bin.
    assert davis_metrics.decay_bins(300)[3] == slice(224, 44)


def test_statistics_hand_arrays():
    mean, recall, decay = davis_metrics.statistics(np.arange(10) / 10)
    assert (mean, recall) == (pytest.approx(0.45), pytest.approx(0.4))
    assert decay == pytest.approx(0.1 - 0.8)
    assert davis_metrics.statistics(np.array([1.0, 0.8, 0.6, 0.2])) == pytest.approx((0.65, 0.75, 0.5))


def test_statistics_nan():
    # A NaN frame is skipped by the means but counts as a miss in recall (NaN > 0.5 is False).
    assert davis_metrics.statistics(np.array([np.nan, 1.0, 0.0, 1.0])) == pytest.approx((2 / 3, 0.5, 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = davis_metrics.statistics(np.zeros(0))
        assert all(math.isnan(value) for value in stats)
        assert math.isnan(davis_metrics.statistics(np.ones(300))[2])


# ----------------------------------------------------------------------------- evaluate_sequence


def _two_object_sequence():
    gt = np.zeros((5, 12, 12), np.uint8)
    gt[:, 1:5, 1:5] = 1
    gt[:, 7:11, 6:11] = 2
    return gt


def test_evaluate_sequence_excludes_first_and_last_frames():
    gt = _two_object_sequence()
    pred = gt.copy()
    pred[0] = 3  # an id above the object count outside the scored frames is never seen
    pred[-1] = 0
    frames = davis_metrics.evaluate_sequence(gt, pred, None, 2)
    assert frames["J"].shape == frames["F"].shape == (2, 3)
    assert (frames["J"] == 1).all() and (frames["F"] == 1).all()


def test_evaluate_sequence_pads_missing_objects():
    gt = _two_object_sequence()
    gt[2][gt[2] == 2] = 0  # object 2 absent from frame 2
    pred = gt.copy()
    pred[pred == 2] = 0
    frames = davis_metrics.evaluate_sequence(gt, pred, None, 2)
    np.testing.assert_array_equal(frames["J"], [[1, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(frames["F"], [[1, 1, 1], [0, 1, 0]])


def test_evaluate_sequence_more_objects_is_an_error():
    gt = _two_object_sequence()
    pred = gt.copy()
    pred[2, 0, 0] = 3
    with pytest.raises(ValueError, match=r"bear.*3.*2 objects"):
        davis_metrics.evaluate_sequence(gt, pred, None, 2, name="bear")


def test_evaluate_sequence_void():
    gt = _two_object_sequence()
    pred = gt.copy()
    pred[:, 0, :] = 1
    void = np.zeros(gt.shape, bool)
    void[:, 0, :] = True
    assert (davis_metrics.evaluate_sequence(gt, pred, None, 2)["J"][0] < 1).all()
    frames = davis_metrics.evaluate_sequence(gt, pred, void, 2)
    assert (frames["J"] == 1).all() and (frames["F"] == 1).all()
