"""Multi-Cluster Sampler: per-pixel sampling radii for the target frame (docs/method.md,
'Multi-cluster sampler').

This file owns the non-differentiable pipeline that turns target features into the per-pixel window
radii consumed by `correspondence.local_reconstruct(..., radius=window, pixel_radius=...)`:
k-means on normalised features plus scaled pixel coordinates, the base radius r0 from the clusters'
spatial spread, region growing from the pixels closest to each centroid, and the final shrink/expand
of r0 inside/outside the grown regions. Everything is jit-compatible, batched over B, and runs under
`jax.lax.stop_gradient`, so gradients never flow through the clustering.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mer_jax import feature_maps

_HIGHEST = jax.lax.Precision.HIGHEST


class KMeansResult(NamedTuple):
    """k-means output.

    Attributes:
      centroids: [B, K, D] final centroids.
      assignment: [B, N] int32 index of each point's nearest final centroid.
    """

    centroids: jax.Array
    assignment: jax.Array


class SamplerOutput(NamedTuple):
    """Multi-Cluster Sampler output.

    Attributes:
      radius: [B, h, w] int32 per-pixel window radius in [radius_min, radius_max].
      base_radius: [B] float32 clipped base radius r0 (feature pixels).
      regions: [B, h, w] int32 grown-region label in 0..K-1, or -1 outside every region.
    """

    radius: jax.Array
    base_radius: jax.Array
    regions: jax.Array


def kmeans_init(points: jax.Array, num_clusters: int) -> jax.Array:
    """Deterministic farthest-point initialisation.

    The first centroid is the point nearest (squared Euclidean) to the mean of all points; each next
    one is the point with the largest squared distance to its nearest already-chosen centroid. Ties go
    to the lowest point index. A point equal to a chosen centroid has distance 0, so as long as the
    points hold at least K distinct values the K initial centroids are distinct.

    Args:
      points: [B, N, D] points.
      num_clusters: K.

    Returns:
      [B, K, D] initial centroids (copies of K of the points).
    """
    points = jax.lax.stop_gradient(jnp.asarray(points))
    batch = jnp.arange(points.shape[0])

    def sq_dist_to(index: jax.Array) -> jax.Array:
        return jnp.sum((points - points[batch, index][:, None, :]) ** 2, axis=-1)  # [B, N]

    first = jnp.argmin(jnp.sum((points - points.mean(axis=1, keepdims=True)) ** 2, axis=-1), axis=1)
    indices = jnp.zeros((points.shape[0], num_clusters), jnp.int32).at[:, 0].set(first)

    def step(k, carry):
        indices, min_dist = carry
        index = jnp.argmax(min_dist, axis=1).astype(jnp.int32)
        return indices.at[:, k].set(index), jnp.minimum(min_dist, sq_dist_to(index))

    indices, _ = jax.lax.fori_loop(1, num_clusters, step, (indices, sq_dist_to(first)))
    return jnp.take_along_axis(points, indices[:, :, None], axis=1)


def _assign(points: jax.Array, centroids: jax.Array) -> jax.Array:
    """[B, N, D], [B, K, D] -> [B, N] int32 nearest centroid by squared Euclidean distance."""
    # |x|^2 is the same for every centroid, so it is dropped from the argmin. HIGHEST: TPU matmuls
    # otherwise run in bf16, which would flip near-tie assignments.
    cross = jnp.einsum("bnd,bkd->bnk", points, centroids, precision=_HIGHEST)
    return jnp.argmin(jnp.sum(centroids**2, axis=-1)[:, None, :] - 2.0 * cross, axis=-1).astype(jnp.int32)


def kmeans(points: jax.Array, num_clusters: int, iters: int) -> KMeansResult:
    """Lloyd's k-means from `kmeans_init`.

    Each of the `iters` steps assigns every point to its nearest centroid (squared Euclidean) and
    replaces each centroid by the mean of its members; a cluster left empty keeps its previous
    centroid. The returned assignment is to the returned centroids.

    Args:
      points: [B, N, D] points.
      num_clusters: K (static).
      iters: number of Lloyd steps (static).

    Returns:
      KMeansResult with centroids [B, K, D] and assignment [B, N] int32.
    """
    points = jax.lax.stop_gradient(points)

    def lloyd_step(_, centroids):
        members = jax.nn.one_hot(_assign(points, centroids), num_clusters, dtype=points.dtype)  # [B, N, K]
        sums = jnp.einsum("bnk,bnd->bkd", members, points, precision=_HIGHEST)
        counts = members.sum(axis=1)[..., None]  # [B, K, 1]
        return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), centroids)

    centroids = jax.lax.fori_loop(0, iters, lloyd_step, kmeans_init(points, num_clusters))
    return KMeansResult(centroids, _assign(points, centroids))


def cluster_features(features: jax.Array, xy_weight: float) -> jax.Array:
    """The points k-means clusters: normalised features plus scaled pixel coordinates.

    Pixel (i, j) gets the coordinates (x, y) = (j, i) * xy_weight / (max(h, w) - 1): the scale is
    the same on both axes, so the longer side spans [0, xy_weight] and the shorter one proportionally
    less (both [0, xy_weight] for square maps; 0 for a 1x1 map).

    Args:
      features: [B, h, w, C] feature map.
      xy_weight: weight of the spatial coordinates relative to the unit-norm features.

    Returns:
      [B, h*w, C+2] points in raster (row-major) order: C L2-normalised feature channels, then x, y.
    """
    b, h, w, c = features.shape
    features = feature_maps.l2_normalize(jax.lax.stop_gradient(features))
    scale = xy_weight / max(max(h, w) - 1, 1)
    ys, xs = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    xy = jnp.stack([xs, ys], axis=-1).astype(features.dtype) * scale  # [h, w, 2]
    points = jnp.concatenate([features, jnp.broadcast_to(xy, (b, h, w, 2))], axis=-1)
    return points.reshape(b, h * w, c + 2)


def base_radius(
    assignment: jax.Array, num_clusters: int, height: int, width: int, radius_min: float, radius_max: float
) -> jax.Array:
    """r0: the clusters' mean spatial spread, clipped.

    For each non-empty cluster, the mean Euclidean distance (in feature pixels) of its members'
    (row, col) positions to the cluster's spatial centroid; r0 is the mean of that over the non-empty
    clusters, clipped to [radius_min, radius_max].

    Args:
      assignment: [B, h*w] int cluster index per pixel, raster order.
      num_clusters: K.
      height: h.
      width: w.
      radius_min: lower clip.
      radius_max: upper clip.

    Returns:
      [B] float32 r0.
    """
    if assignment.shape[1] != height * width:
        raise ValueError(f"assignment {assignment.shape} must be [B, {height}*{width}]")
    assignment = jax.lax.stop_gradient(assignment)
    ys, xs = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    pos = jnp.stack([ys.ravel(), xs.ravel()], axis=-1).astype(jnp.float32)  # [N, 2]
    members = jax.nn.one_hot(assignment, num_clusters, dtype=jnp.float32)  # [B, N, K]
    counts = members.sum(axis=1)  # [B, K]
    centre = jnp.einsum("bnk,nd->bkd", members, pos, precision=_HIGHEST) / jnp.maximum(counts, 1.0)[..., None]
    own_centre = jnp.take_along_axis(centre, assignment[:, :, None].astype(jnp.int32), axis=1)  # [B, N, 2]
    dist = jnp.linalg.norm(pos[None] - own_centre, axis=-1)  # [B, N]
    spread = jnp.einsum("bnk,bn->bk", members, dist, precision=_HIGHEST) / jnp.maximum(counts, 1.0)
    non_empty = counts > 0
    r0 = jnp.sum(jnp.where(non_empty, spread, 0.0), axis=1) / jnp.maximum(non_empty.sum(axis=1), 1)
    return jnp.clip(r0, radius_min, radius_max)


def _touches(mask: jax.Array) -> jax.Array:
    """[B, h, w, K] bool -> whether each pixel has a 4-neighbour where `mask` holds (per channel)."""
    p = jnp.pad(mask, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return p[:, :-2, 1:-1] | p[:, 2:, 1:-1] | p[:, 1:-1, :-2] | p[:, 1:-1, 2:]


def grow_regions(
    features: jax.Array, centroids_feat: jax.Array, threshold: float, max_rounds: int | None = None
) -> jax.Array:
    """Region growing from the pixel closest to each centroid.

    Both inputs are L2-normalised here, so any scale is accepted and the similarity is the cosine.
    Seed of region k: the pixel with the highest cos(f_i, c_k) (lowest raster index on ties); a seed
    is kept whatever its cosine, and if two seeds coincide the lower k keeps the pixel. Each round,
    synchronously, an unlabelled pixel joins region k when a 4-neighbour belongs to region k (as of
    the previous round) and cos(f_i, c_k) > threshold; when several regions qualify it joins the one
    with the highest cosine (the lower k on exact ties). Labelled pixels never change. Growing stops
    when a round changes nothing or after `max_rounds` rounds.

    Args:
      features: [B, h, w, C] feature map.
      centroids_feat: [B, K, C] feature part of the cluster centroids.
      threshold: cosine a pixel must exceed to join a region.
      max_rounds: cap on the growing rounds (static); None means h + w.

    Returns:
      [B, h, w] int32 region label in 0..K-1, or -1 for pixels in no region.
    """
    b, h, w, _ = features.shape
    num_clusters = centroids_feat.shape[1]
    max_rounds = h + w if max_rounds is None else max_rounds
    features = feature_maps.l2_normalize(jax.lax.stop_gradient(features))
    centroids_feat = feature_maps.l2_normalize(jax.lax.stop_gradient(centroids_feat))
    cos = jnp.einsum("bhwc,bkc->bhwk", features, centroids_feat, precision=_HIGHEST)
    seed = jnp.argmax(cos.reshape(b, h * w, num_clusters), axis=1)  # [B, K]
    is_seed = (jnp.arange(h * w)[None, :, None] == seed[:, None, :]).reshape(b, h, w, num_clusters)
    labels = jnp.where(is_seed.any(-1), jnp.argmax(is_seed, axis=-1), -1).astype(jnp.int32)
    eligible = cos > threshold
    ks = jnp.arange(num_clusters, dtype=jnp.int32)

    def cond(state):
        _, rounds, changed = state
        return changed & (rounds < max_rounds)

    def body(state):
        labels, rounds, _ = state
        joins = (labels == -1)[..., None] & _touches(labels[..., None] == ks) & eligible
        best = jnp.argmax(jnp.where(joins, cos, -jnp.inf), axis=-1).astype(jnp.int32)
        grows = joins.any(-1)
        return jnp.where(grows, best, labels), rounds + 1, grows.any()

    labels, _, _ = jax.lax.while_loop(cond, body, (labels, jnp.int32(0), jnp.bool_(True)))
    return labels


def radius_limits(radius_min: int, radius_max: int, grid_reference: int, height: int, width: int) -> tuple[int, int]:
    """The radius limits on an h x w feature grid, in feature pixels.

    With `grid_reference` 0 the limits are taken as given. Otherwise they are meant for a
    grid_reference x grid_reference grid (the paper's 2..12 for the 64x64 grid of 256x256 frames)
    and scale with the grid's shorter side: lo = max(1, round(radius_min * s)), hi = max(lo,
    round(radius_max * s)), s = min(h, w) / grid_reference, rounding half to even.

    Returns:
      (lo, hi) Python ints; hi is the caller's window radius.
    """
    if grid_reference < 0:
        raise ValueError(f"grid_reference must be a grid side, or 0 for limits in feature pixels; got {grid_reference}")
    if grid_reference == 0:
        return radius_min, radius_max
    scale = min(height, width) / grid_reference
    low = max(1, round(radius_min * scale))
    return low, max(low, round(radius_max * scale))


@dataclasses.dataclass(frozen=True)
class Sampler:
    """The Multi-Cluster Sampler, built from config.model.sampler (`Sampler(**config.model.sampler)`):
    per-pixel window radii for a target frame.

    With `center_features`, each frame's mean feature is first subtracted from its features, so
    that the cosines below compare what sets pixels apart rather than the component all of them
    share. k-means on `cluster_features(features, cluster_xy_weight)` gives r0 (`base_radius`)
    and the centroids whose feature part seeds `grow_regions`. Pixels inside a grown region get
    round(r0 * shrink), the others round(r0 * expand), both clipped to the limits
    `radius_limits(radius_min, radius_max, grid_reference, h, w)`; rounding is half-to-even
    (`jnp.round`). Nothing here is differentiated.

    Attributes:
      num_clusters: K (static).
      kmeans_iters: Lloyd steps (static).
      cluster_xy_weight: weight of the [0, 1]-scaled pixel coordinates in the clustered points (the
        config's 1.0 is ours: the paper gives no value).
      grow_threshold: cosine a pixel must exceed to join a region.
      shrink: r0 factor inside grown regions.
      expand: r0 factor outside them.
      radius_min: lower clip of r0 and of the radii (before scaling).
      radius_max: upper clip of r0 and of the radii (before scaling; after it, the window radius).
      grid_reference: the grid side the limits are meant for, or 0 for limits in feature pixels.
      center_features: subtract each frame's mean feature first.
    """

    num_clusters: int
    kmeans_iters: int
    cluster_xy_weight: float
    grow_threshold: float
    shrink: float
    expand: float
    radius_min: int
    radius_max: int
    grid_reference: int
    center_features: bool

    def window(self, height: int, width: int) -> int:
        """The window radius on an h x w feature grid: the upper radius limit (`radius_limits`)."""
        return radius_limits(self.radius_min, self.radius_max, self.grid_reference, height, width)[1]

    def __call__(self, features: jax.Array) -> SamplerOutput:
        """The radii of target features [B, h, w, C] (any scale; normalised internally).

        Returns:
          SamplerOutput with radius [B, h, w] int32, base_radius [B] float32, regions [B, h, w] int32.
        """
        features = jax.lax.stop_gradient(features)
        _, h, w, c = features.shape
        radius_min, radius_max = radius_limits(self.radius_min, self.radius_max, self.grid_reference, h, w)
        if self.center_features:
            features = features - features.mean(axis=(1, 2), keepdims=True)
        clusters = kmeans(cluster_features(features, self.cluster_xy_weight), self.num_clusters, self.kmeans_iters)
        r0 = base_radius(clusters.assignment, self.num_clusters, h, w, radius_min, radius_max)
        regions = grow_regions(features, clusters.centroids[..., :c], self.grow_threshold)
        r_in = jnp.clip(jnp.round(r0 * self.shrink), radius_min, radius_max)
        r_out = jnp.clip(jnp.round(r0 * self.expand), radius_min, radius_max)
        radius = jnp.where(regions >= 0, r_in[:, None, None], r_out[:, None, None]).astype(jnp.int32)
        return SamplerOutput(radius, r0.astype(jnp.float32), regions)
