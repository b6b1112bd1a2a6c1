"""Points on the feature grid: Gaussian heatmaps propagated as soft labels and decoded back, and
the features at a point.

JHMDB propagates its 15 joints this way and TAP-Vid its query points (docs/method.md,
'Benchmarks'). Coordinates are 0-based (x, y) pixel centres. Feature cell i on a grid of stride
s covers pixels [s*i, s*i + s - 1], so its centre lies at pixel s*i + (s - 1)/2; encoding and
decoding both use this alignment, which makes decode(encode(point)) land back on the point.
"""

import math

import numpy as np


def feature_grid_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Returns the (h, w) = (ceil(height / stride), ceil(width / stride)) feature grid of an image."""
    return math.ceil(height / stride), math.ceil(width / stride)


def points_to_heatmaps(
    points: np.ndarray,
    visible: np.ndarray,
    height: int,
    width: int,
    stride: int,
    sigma: float,
) -> np.ndarray:
    """Encodes points as Gaussian heatmaps plus a background channel on the feature grid.

    A point at pixel (x, y) maps to feature coordinates ((x - (stride-1)/2) / stride, (y - (stride-1)/2) / stride).
    Channel j is exp(-d^2 / (2 sigma^2)) with d the distance in feature cells to point j, so it peaks at exactly
    1 when the point lies on a cell centre; channels of invisible points are zero.

    Args:
      points: [N, 2] 0-based (x, y) pixel coordinates.
      visible: [N] bool.
      height: image height in pixels.
      width: image width in pixels.
      stride: pixels per feature cell.
      sigma: Gaussian standard deviation in feature cells.

    Returns:
      [h, w, N + 1] float32 with h = ceil(height / stride), w = ceil(width / stride); channels 0..N-1 are the
      points, channel N is the background clip(1 - max over point channels, 0, 1).
    """
    points = np.asarray(points, np.float64)
    visible = np.asarray(visible, bool)
    if points.ndim != 2 or points.shape[1] != 2 or visible.shape != points.shape[:1]:
        raise ValueError(f"expected points [N, 2] and visible [N], got {points.shape}, {visible.shape}")
    h, w = feature_grid_size(height, width, stride)
    centres = (np.where(visible[:, None], points, 0.0) - (stride - 1) / 2) / stride
    dy2 = (np.arange(h)[:, None] - centres[None, :, 1]) ** 2  # [h, N]
    dx2 = (np.arange(w)[:, None] - centres[None, :, 0]) ** 2  # [w, N]
    maps = np.exp(-(dy2[:, None, :] + dx2[None, :, :]) / (2 * sigma**2)) * visible  # [h, w, N]
    background = np.clip(1.0 - maps.max(-1, keepdims=True, initial=0.0), 0.0, 1.0)
    return np.concatenate([maps, background], -1).astype(np.float32)


def heatmaps_to_points(heatmaps: np.ndarray, height: int, width: int, stride: int, topk: int) -> np.ndarray:
    """Decodes point positions from (propagated) heatmaps.

    For each point channel: the value-weighted mean of the feature-grid coordinates of its `topk` largest
    values (negative values weigh 0; if all `topk` weights are 0 the plain mean of their locations), mapped
    to pixels with the alignment of `points_to_heatmaps` (x = stride*j + (stride-1)/2) and clipped into the
    image. Inverts `points_to_heatmaps` for visible points to within 1 px; a point within (stride-1)/2 px of
    the image border, beyond the outermost cell centres, comes back within 1 px of the nearest such centre.

    Args:
      heatmaps: [h, w, N + 1] point channels 0..N-1 and the background channel N (ignored), with
        h = ceil(height / stride), w = ceil(width / stride).
      height: image height in pixels.
      width: image width in pixels.
      stride: pixels per feature cell.
      topk: number of largest values averaged per point.

    Returns:
      [N, 2] float32 0-based (x, y) pixel coordinates.
    """
    heatmaps = np.asarray(heatmaps, np.float64)
    h, w = feature_grid_size(height, width, stride)
    if heatmaps.ndim != 3 or heatmaps.shape[:2] != (h, w) or heatmaps.shape[2] < 1:
        raise ValueError(f"expected heatmaps [{h}, {w}, N + 1] for {height}x{width}, got {heatmaps.shape}")
    num_points = heatmaps.shape[2] - 1
    flat = heatmaps[..., :num_points].reshape(h * w, num_points).T  # [N, h*w]
    top = np.argpartition(-flat, topk - 1, axis=1)[:, :topk]  # [N, topk]
    weights = np.maximum(np.take_along_axis(flat, top, axis=1), 0.0)
    total = weights.sum(1, keepdims=True)
    weights = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 1.0 / topk)
    rows, cols = np.divmod(top, w)
    cell_xy = np.stack([(weights * cols).sum(1), (weights * rows).sum(1)], -1)  # [N, 2]
    xy = stride * cell_xy + (stride - 1) / 2
    return np.clip(xy, 0.0, [width - 1, height - 1]).astype(np.float32)


def sample_features(features: np.ndarray, points: np.ndarray, stride: int) -> np.ndarray:
    """Features at points, bilinear between the cell centres of `points_to_heatmaps`' alignment.

    Args:
      features: [h, w, C] one frame's feature grid.
      points: [N, 2] 0-based (x, y) pixel coordinates; beyond the outermost cell centres they take
        the border cells' values.
      stride: pixels per feature cell.

    Returns:
      [N, C] float32.
    """
    features = np.asarray(features, np.float32)
    h, w = features.shape[:2]
    cell = (np.asarray(points, np.float64) - (stride - 1) / 2) / stride
    x, y = np.clip(cell[:, 0], 0, w - 1), np.clip(cell[:, 1], 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (x - x0)[:, None], (y - y0)[:, None]
    top = features[y0, x0] * (1 - ax) + features[y0, x1] * ax
    bottom = features[y1, x0] * (1 - ax) + features[y1, x1] * ax
    return (top * (1 - ay) + bottom * ay).astype(np.float32)
