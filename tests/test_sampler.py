"""Multi-Cluster Sampler against plain NumPy references and hand-computed cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax import correspondence, sampler

# The paper's sampler with limits in feature pixels and uncentred features; tests override fields.
DEFAULTS = dict(
    num_clusters=5, kmeans_iters=10, cluster_xy_weight=1.0, grow_threshold=0.45, shrink=0.5, expand=1.5,
    radius_min=2, radius_max=12, grid_reference=0, center_features=False,
)  # fmt: skip


def pixel_radii(features, **overrides):
    """`sampler.Sampler` with DEFAULTS and the overrides, on features."""
    return sampler.Sampler(**{**DEFAULTS, **overrides})(features)


def init_reference(points, num_clusters):
    """Farthest-point init in float64: start nearest the mean, then the farthest from the chosen."""
    out = []
    for p in points.astype(np.float64):
        idx = [int(np.argmin(((p - p.mean(0)) ** 2).sum(-1)))]
        min_dist = ((p - p[idx[0]]) ** 2).sum(-1)
        for _ in range(1, num_clusters):
            idx.append(int(np.argmax(min_dist)))
            min_dist = np.minimum(min_dist, ((p - p[idx[-1]]) ** 2).sum(-1))
        out.append(points[len(out)][idx])
    return np.stack(out)


def lloyd_reference(points, init, iters):
    """Textbook Lloyd loop in float64; an empty cluster keeps its centroid."""
    all_c, all_a = [], []
    for p, c in zip(points.astype(np.float64), init.astype(np.float64)):
        c = c.copy()
        for _ in range(iters):
            a = np.argmin(((p[:, None] - c[None]) ** 2).sum(-1), axis=1)
            for k in range(len(c)):
                if (a == k).any():
                    c[k] = p[a == k].mean(0)
        all_c.append(c)
        all_a.append(np.argmin(((p[:, None] - c[None]) ** 2).sum(-1), axis=1))
    return np.stack(all_c), np.stack(all_a)


def grow_reference(features, centroids, threshold, max_rounds):
    """Round-synchronous flood fill with explicit loops over pixels and regions."""
    f = features / np.linalg.norm(features, axis=-1, keepdims=True)
    c = centroids / np.linalg.norm(centroids, axis=-1, keepdims=True)
    b, h, w, _ = f.shape
    out = np.full((b, h, w), -1)
    for i in range(b):
        cos = np.einsum("hwc,kc->hwk", f[i].astype(np.float64), c[i].astype(np.float64))
        labels = out[i]
        for k in reversed(range(c.shape[1])):  # written last = kept: the lower k wins a shared seed
            labels[np.unravel_index(np.argmax(cos[..., k]), (h, w))] = k
        for _ in range(max_rounds):
            new = labels.copy()
            for y in range(h):
                for x in range(w):
                    if labels[y, x] != -1:
                        continue
                    near = {
                        labels[v, u]
                        for v, u in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1))
                        if 0 <= v < h and 0 <= u < w
                    }
                    best, best_cos = -1, -np.inf
                    for k in range(c.shape[1]):
                        if k in near and cos[y, x, k] > threshold and cos[y, x, k] > best_cos:
                            best, best_cos = k, cos[y, x, k]
                    new[y, x] = best
            if (new == labels).all():
                break
            labels[:] = new
    return out


def clustered_points(seed, b=2, n=60, d=4, centres=3):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=6.0, size=(b, centres, d))
    which = rng.integers(0, centres, size=(b, n))
    return (np.take_along_axis(means, which[..., None], 1) + rng.normal(size=(b, n, d))).astype(np.float32)


def uniform_points(seed, b=2, n=80, d=3):
    return np.random.default_rng(seed).uniform(size=(b, n, d)).astype(np.float32)


@pytest.mark.parametrize("points,k", [(clustered_points(0), 3), (uniform_points(1), 5), (uniform_points(2), 1)])
def test_kmeans_init_is_farthest_point(points, k):
    np.testing.assert_array_equal(np.asarray(sampler.kmeans_init(points, k)), init_reference(points, k))


def test_kmeans_init_distinct_despite_duplicate_points():
    values = np.random.default_rng(3).normal(size=(1, 4, 2)).astype(np.float32)
    points = np.repeat(values, 5, axis=1)  # 4 distinct values, 5 copies each
    init = np.asarray(sampler.kmeans_init(points, 4))[0]
    assert len(np.unique(init, axis=0)) == 4


@pytest.mark.parametrize(
    "points,k,iters",
    [(clustered_points(4), 3, 10), (clustered_points(5), 4, 10), (uniform_points(6), 5, 10), (uniform_points(7), 4, 0)],
)
def test_kmeans_matches_numpy_lloyd(points, k, iters):
    got = sampler.kmeans(points, k, iters)
    jitted = jax.jit(sampler.kmeans, static_argnums=(1, 2))(points, k, iters)
    want_c, want_a = lloyd_reference(points, np.asarray(sampler.kmeans_init(points, k)), iters)
    np.testing.assert_array_equal(np.asarray(got.assignment), want_a)
    np.testing.assert_allclose(np.asarray(got.centroids), want_c, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(jitted.assignment), np.asarray(got.assignment))
    np.testing.assert_allclose(np.asarray(jitted.centroids), np.asarray(got.centroids), rtol=1e-6, atol=1e-6)
    assert got.assignment.dtype == jnp.int32


def test_kmeans_empty_cluster_keeps_its_centroid(monkeypatch):
    points = uniform_points(8, b=1, n=30, d=2)
    init = np.array([[[0.2, 0.2], [0.8, 0.8], [100.0, 100.0]]], np.float32)
    monkeypatch.setattr(sampler, "kmeans_init", lambda p, k: jnp.asarray(init))
    got = sampler.kmeans(points, 3, 5)
    want_c, want_a = lloyd_reference(points, init, 5)
    np.testing.assert_array_equal(np.asarray(got.centroids)[0, 2], [100.0, 100.0])
    np.testing.assert_array_equal(np.asarray(got.assignment), want_a)
    np.testing.assert_allclose(np.asarray(got.centroids), want_c, rtol=1e-5, atol=1e-5)


def test_cluster_features_normalises_and_scales_xy():
    features = np.random.default_rng(9).normal(size=(2, 3, 5, 4)).astype(np.float32)
    points = np.asarray(sampler.cluster_features(features, 2.0))
    assert points.shape == (2, 15, 6)
    np.testing.assert_allclose(np.linalg.norm(points[..., :4], axis=-1), 1.0, rtol=1e-6)
    rows, cols = np.divmod(np.arange(15), 5)
    np.testing.assert_allclose(points[0, :, 4], cols * 2.0 / 4)  # longer side (w=5) spans [0, 2]
    np.testing.assert_allclose(points[1, :, 5], rows * 2.0 / 4)


def test_base_radius_hand_case():
    # Example 0 on a 2x4 grid; cluster 4 is empty and must not count.
    #   0 1 1 3        cluster 0: (0,0),(1,3) -> centre (0.5,1.5), both at sqrt(2.5)
    #   2 2 2 0        cluster 1: 0.5; cluster 2: centre (1,1), distances 1,0,1; cluster 3: 0
    # Example 1: everything in cluster 0 -> centre (0.5,1.5), distances sqrt(2.5) x4, sqrt(0.5) x4.
    assignment = np.array([[0, 1, 1, 3, 2, 2, 2, 0], [0] * 8])
    want = np.array([(np.sqrt(2.5) + 0.5 + 2 / 3 + 0) / 4, (np.sqrt(2.5) + np.sqrt(0.5)) / 2])
    got = sampler.base_radius(assignment, 5, 2, 4, 0.0, 12.0)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sampler.base_radius(assignment, 5, 2, 4, 1.0, 1.1)), [1.0, 1.1])


def planted_blobs(seed, b=2, h=12, w=12, c=6, k=3):
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(b, k, c))
    features = rng.normal(scale=0.6, size=(b, h, w, c))
    for i in range(b):
        for j in range(k):
            y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
            dy, dx = rng.integers(2, 6, size=2)
            features[i, y : y + dy, x : x + dx] += 2.0 * directions[i, j]
    centroids = directions + rng.normal(scale=0.2, size=directions.shape)
    return features.astype(np.float32), centroids.astype(np.float32)


@pytest.mark.parametrize("threshold", [0.2, 0.45, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_grow_regions_matches_flood_fill(seed, threshold):
    features, centroids = planted_blobs(seed)
    got = jax.jit(sampler.grow_regions)(features, centroids, threshold)
    np.testing.assert_array_equal(np.asarray(got), grow_reference(features, centroids, threshold, 24))
    assert got.dtype == jnp.int32


@pytest.mark.parametrize("threshold", [-0.5, 0.0])
def test_grow_regions_contested_pixels_match_flood_fill(threshold):
    # Unstructured features, many regions and a low threshold: fronts meet and pixels are contested.
    rng = np.random.default_rng(13)
    features = rng.normal(size=(2, 10, 10, 3)).astype(np.float32)
    centroids = rng.normal(size=(2, 6, 3)).astype(np.float32)
    got = sampler.grow_regions(features, centroids, threshold)
    np.testing.assert_array_equal(np.asarray(got), grow_reference(features, centroids, threshold, 20))


def test_grow_regions_shared_seed_goes_to_lower_k():
    features = np.random.default_rng(10).normal(size=(1, 6, 6, 3)).astype(np.float32)
    centroids = np.repeat(features[:, 2:3, 4], 2, axis=1) * np.array([[[1.0], [2.0]]], np.float32)  # same direction
    got = np.asarray(sampler.grow_regions(features, centroids, 0.3))
    np.testing.assert_array_equal(got, grow_reference(features, centroids, 0.3, 12))
    assert got[0, 2, 4] == 0 and not (got == 1).any()


def snake(h=8, w=8):
    """Serpentine path through rows 0, 2, 4, 6 joined at alternating ends: 35 pixels on 8x8."""
    path = []
    for row in range(0, h, 2):
        cols = range(w) if row % 4 == 0 else range(w - 1, -1, -1)
        path += [(row, col) for col in cols]
        if row + 2 < h:
            path.append((row + 1, path[-1][1]))
    return path


@pytest.mark.parametrize("max_rounds,grown", [(0, 1), (5, 6), (None, 17), (100, 35)])
def test_grow_regions_round_cap_on_a_snake(max_rounds, grown):
    path = snake()
    features = np.tile(np.array([0.0, 1.0], np.float32), (1, 8, 8, 1))
    for y, x in path:
        features[0, y, x] = [1.0, 0.1]
    features[0, path[0][0], path[0][1]] = [1.0, 0.0]  # the seed is the path's first pixel
    centroids = np.array([[[1.0, 0.0]]], np.float32)
    got = np.asarray(sampler.grow_regions(features, centroids, 0.5, max_rounds))[0]
    want = np.full((8, 8), -1)
    want[tuple(np.array(path[:grown]).T)] = 0
    np.testing.assert_array_equal(got, want)
    rounds = 16 if max_rounds is None else max_rounds  # default cap: h + w
    np.testing.assert_array_equal(got, grow_reference(features, centroids, 0.5, rounds)[0])


def blob_features():
    """4x4 maps: example 0 has a 2x2 centre blob along e0 on an e1 background, example 1 is all e1."""
    features = np.zeros((2, 4, 4, 2), np.float32)
    features[..., 1] = 1.0
    features[0, 1:3, 1:3] = [1.0, 0.0]
    return features


# One cluster: r0 is the mean distance of the 4x4 grid to its centre (1.5, 1.5), 4 pixels at
# sqrt(0.5), 8 at sqrt(2.5), 4 at sqrt(4.5) = 1.4977. The cluster's mean feature (e0 + 3 e1 in
# example 0) has cosine 0.316 with the blob and 0.949 with the background, so at threshold 0.45 the
# region is the background ring and the blob is outside.
R0 = (4 * np.sqrt(0.5) + 8 * np.sqrt(2.5) + 4 * np.sqrt(4.5)) / 16


@pytest.mark.parametrize(
    "radius_min,radius_max,shrink,expand,r0,r_in,r_out",
    [
        (0, 12, 2.0, 4.0, R0, 3, 6),  # round(2.995) = 3, round(5.991) = 6
        (0, 5, 2.0, 4.0, R0, 3, 5),  # r_out clipped from above
        (2, 12, 0.5, 1.5, 2.0, 2, 3),  # r0 clipped to 2; r_in = round(1) clipped to 2; r_out = 3
        (0, 1, 2.0, 4.0, 1.0, 1, 1),  # r0 and both radii clipped from above
    ],
)
def test_pixel_radii_hand_case(radius_min, radius_max, shrink, expand, r0, r_in, r_out):
    out = pixel_radii(
        blob_features(),
        num_clusters=1,
        grow_threshold=0.45,
        shrink=shrink,
        expand=expand,
        radius_min=radius_min,
        radius_max=radius_max,
    )
    blob = np.zeros((4, 4), bool)
    blob[1:3, 1:3] = True
    np.testing.assert_array_equal(np.asarray(out.regions), np.stack([np.where(blob, -1, 0), np.zeros((4, 4))]))
    np.testing.assert_array_equal(
        np.asarray(out.radius), np.stack([np.where(blob, r_out, r_in), np.full((4, 4), r_in)])
    )
    np.testing.assert_allclose(np.asarray(out.base_radius), [r0, r0], rtol=1e-6)
    assert out.radius.dtype == jnp.int32 and out.base_radius.dtype == jnp.float32


SAMPLER_ARGS = dict(num_clusters=2, kmeans_iters=3, radius_min=1, radius_max=4, shrink=0.7, expand=2.5)


@pytest.mark.parametrize("outer_stop_gradient", [True, False])
def test_no_gradient_flows_through_the_sampler(outer_stop_gradient):
    rng = np.random.default_rng(11)
    query = rng.normal(size=(1, 8, 8, 4)).astype(np.float32)
    keys = rng.normal(size=(1, 1, 8, 8, 4)).astype(np.float32)
    values = rng.normal(size=(1, 1, 8, 8, 3)).astype(np.float32)
    recon = functools.partial(correspondence.local_reconstruct, radius=4, temperature=1.0, tile=4)

    def loss(q):
        features = jax.lax.stop_gradient(q) if outer_stop_gradient else q
        radius = pixel_radii(features, **SAMPLER_ARGS).radius
        return jnp.sum(recon(q, keys, values, pixel_radius=radius) ** 2)

    constant_radius = pixel_radii(query, **SAMPLER_ARGS).radius
    assert len(np.unique(np.asarray(constant_radius))) == 2  # both r_in and r_out occur
    got = jax.jit(jax.grad(loss))(query)
    want = jax.jit(jax.grad(lambda q: jnp.sum(recon(q, keys, values, pixel_radius=constant_radius) ** 2)))(query)
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
    zero = jax.grad(lambda q: pixel_radii(q, **SAMPLER_ARGS).base_radius.sum())(query)
    np.testing.assert_array_equal(np.asarray(zero), 0.0)


def test_jitted_sampler_shapes_and_range():
    features = jnp.asarray(np.random.default_rng(12).normal(size=(2, 16, 16, 8)).astype(np.float32))
    out = jax.jit(sampler.Sampler(**DEFAULTS))(features)
    assert out.radius.shape == out.regions.shape == (2, 16, 16) and out.base_radius.shape == (2,)
    assert ((out.radius >= 2) & (out.radius <= 12)).all()


@pytest.mark.parametrize(
    "reference,height,width,want",
    [
        (0, 16, 16, (2, 12)),  # Feature pixels as given.
        (64, 64, 64, (2, 12)),  # The paper's grid.
        (64, 16, 16, (1, 3)),  # round(0.5) = 0 -> at least 1; round(3) = 3.
        (64, 32, 40, (1, 6)),  # The shorter side sets the scale.
        (64, 120, 214, (4, 22)),  # 480p DAVIS: round(3.75) = 4, round(22.5) = 22 (half to even).
    ],
)
def test_radius_limits_scale_with_the_grid(reference, height, width, want):
    assert sampler.radius_limits(2, 12, reference, height, width) == want


def test_negative_grid_reference_is_an_error():
    with pytest.raises(ValueError, match="grid_reference must be"):
        sampler.radius_limits(2, 12, -64, 16, 16)


def shared_component_blobs(seed, b=2, h=10, w=10, c=6):
    """Planted blobs on noise, plus one large component every pixel shares (as raw features have)."""
    features, _ = planted_blobs(seed, b=b, h=h, w=w, c=c)
    common = np.random.default_rng(seed + 100).normal(size=c)
    return (features + 6.0 * common / np.linalg.norm(common)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_centred_region_growing_matches_numpy_flood_fill(seed):
    """pixel_radii(center_features=True): each frame's mean subtracted, then k-means and region
    growing, all against NumPy references."""
    features = shared_component_blobs(seed)
    b, h, w, c = features.shape
    args = dict(num_clusters=3, kmeans_iters=4, grow_threshold=0.45, cluster_xy_weight=1.0)
    got = pixel_radii(features, **args, radius_min=1, radius_max=4, center_features=True)
    centred = features.astype(np.float64) - features.mean(axis=(1, 2), keepdims=True)
    unit = centred / np.linalg.norm(centred, axis=-1, keepdims=True)
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    xy = np.stack([xs, ys], -1).reshape(-1, 2) / (max(h, w) - 1)
    points = np.concatenate([unit.reshape(b, h * w, c), np.broadcast_to(xy, (b, h * w, 2))], -1)
    centroids, _ = lloyd_reference(points, init_reference(points, 3), 4)
    want = grow_reference(centred, centroids[..., :c], 0.45, h + w)
    np.testing.assert_array_equal(np.asarray(got.regions), want)
    # The shared component makes every cosine high: uncentred, the regions flood the frame.
    flooded = pixel_radii(features, **args, radius_min=1, radius_max=4, center_features=False)
    assert (np.asarray(flooded.regions) >= 0).mean() > 0.95
    assert (want >= 0).mean() < 0.9
