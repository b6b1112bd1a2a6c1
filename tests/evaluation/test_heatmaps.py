"""Points as heatmaps on the feature grid and back: hand-computed values and round trips."""

import numpy as np
import pytest

from mer_jax.evaluation import heatmaps

J = 15  # any number of points


def test_heatmap_round_trip_for_visible_points():
    rng = np.random.default_rng(0)
    height, width, stride = 240, 320, 4
    margin = (stride - 1) / 2  # outermost cell centres
    for _ in range(20):
        points = rng.uniform([margin, margin], [width - 1 - margin, height - 1 - margin], size=(J, 2))
        maps = heatmaps.points_to_heatmaps(points, np.ones(J, bool), height, width, stride, sigma=0.5)
        assert maps.shape == (60, 80, J + 1) and maps.dtype == np.float32
        decoded = heatmaps.heatmaps_to_points(maps, height, width, stride, topk=3)
        assert np.abs(decoded - points).max() < 1.0
    # Near the border decoding stops at the outermost cell centre, then within the same ~1 px.
    border = np.array([[0.0, 0.0], [width - 0.01, height - 0.01]] + [[100.0, 100.0]] * (J - 2))
    decoded = heatmaps.heatmaps_to_points(
        heatmaps.points_to_heatmaps(border, np.ones(J, bool), height, width, stride, 0.5), height, width, stride, 3
    )
    clamped = np.clip(border, margin, [width - 1 - margin, height - 1 - margin])
    assert np.abs(decoded - clamped).max() < 1.0


def test_heatmaps_of_invisible_points_and_background():
    points = np.tile([[101.5, 41.5]], (J, 1))  # x = 4 * 25 + 1.5, y = 4 * 10 + 1.5: a cell centre
    visible = np.zeros(J, bool)
    visible[0] = True
    maps = heatmaps.points_to_heatmaps(points, visible, 240, 320, stride=4, sigma=0.5)
    assert maps[10, 25, 0] == 1.0 and maps[..., 0].max() == 1.0
    assert maps[10, 26, 0] == pytest.approx(np.exp(-2.0))  # one cell away, sigma 0.5
    np.testing.assert_array_equal(maps[..., 1:J], 0.0)
    assert maps[10, 25, J] == 0.0
    np.testing.assert_allclose(maps[..., J], np.clip(1.0 - maps[..., 0], 0.0, 1.0))
    assert maps[0, 0, J] == 1.0
    none_visible = heatmaps.points_to_heatmaps(points, np.zeros(J, bool), 240, 320, stride=4, sigma=0.5)
    np.testing.assert_array_equal(none_visible[..., :J], 0.0)
    np.testing.assert_array_equal(none_visible[..., J], 1.0)


def test_heatmap_grid_rounds_up():
    maps = heatmaps.points_to_heatmaps(np.full((J, 2), 5.0), np.ones(J, bool), 241, 322, stride=4, sigma=0.5)
    assert maps.shape == (61, 81, J + 1)
    with pytest.raises(ValueError, match="expected heatmaps"):
        heatmaps.heatmaps_to_points(maps, 240, 320, stride=4, topk=3)


def test_features_at_points_are_bilinear_between_cell_centres():
    features = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    centre = lambda row, col: [4 * col + 1.5, 4 * row + 1.5]  # noqa: E731  (pixel of a cell centre)
    points = np.array([centre(1, 2), [4 * 2 + 1.5 + 1.0, 4 * 1 + 1.5], [4 * 2 + 1.5 + 2.0, 4 * 1 + 1.5 + 2.0],
                       [-3.0, -3.0], [100.0, 100.0]])  # fmt: skip
    sampled = heatmaps.sample_features(features, points, stride=4)
    np.testing.assert_allclose(sampled[0], features[1, 2], rtol=1e-6)
    np.testing.assert_allclose(sampled[1], 0.75 * features[1, 2] + 0.25 * features[1, 3], rtol=1e-5)
    halfway = (features[1, 2] + features[1, 3] + features[2, 2] + features[2, 3]) / 4
    np.testing.assert_allclose(sampled[2], halfway, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sampled[3], features[0, 0], rtol=1e-6)  # beyond the border: the border cell
    np.testing.assert_allclose(sampled[4], features[2, 3], rtol=1e-6)
