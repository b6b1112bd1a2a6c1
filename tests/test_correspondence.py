"""Local-window reconstruction against a dense masked softmax written in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax import correspondence
from tests import jaxpr_sizes


def dense_reference(query, keys, values, radius, temperature, fusion="joint", pixel_radius=None):
    """Plain NumPy: full HW x (R HW) logits, Chebyshev-distance mask, softmax, weighted sum."""
    b, h, w, c = query.shape
    r = keys.shape[1]
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], -1)
    dist = np.abs(pos[:, None, :] - pos[None, :, :]).max(-1)  # [HW, HW]
    out = np.zeros((b, h * w, values.shape[-1]))
    for i in range(b):
        q = query[i].reshape(h * w, c).astype(np.float64)
        logits = np.einsum("qc,rkc->qrk", q, keys[i].reshape(r, h * w, c)) / temperature
        rad = np.full(h * w, radius) if pixel_radius is None else pixel_radius[i].ravel()
        mask = (dist <= rad[:, None])[:, None, :]
        logits = np.where(mask, logits, -np.inf)
        vals = values[i].reshape(r, h * w, -1)
        if fusion == "joint":
            flat = logits.reshape(h * w, -1)
            wts = np.exp(flat - flat.max(-1, keepdims=True))
            wts /= wts.sum(-1, keepdims=True)
            out[i] = wts @ vals.reshape(r * h * w, -1)
        else:
            wts = np.exp(logits - logits.max(-1, keepdims=True))
            wts /= wts.sum(-1, keepdims=True)
            out[i] = np.median(np.einsum("qrk,rkv->qrv", wts, vals), axis=1)
    return out.reshape(b, h, w, -1)


def random_inputs(seed, b=2, r=2, h=11, w=13, c=5, v=3):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(b, h, w, c)).astype(np.float32),
        rng.normal(size=(b, r, h, w, c)).astype(np.float32),
        rng.normal(size=(b, r, h, w, v)).astype(np.float32),
    )


@pytest.mark.parametrize("radius,tile", [(0, 4), (2, 4), (3, 5), (6, 8), (20, 3)])
@pytest.mark.parametrize("fusion", ["joint", "median"])
def test_matches_dense_masked_softmax(radius, tile, fusion):
    query, keys, values = random_inputs(radius + tile)
    got = correspondence.local_reconstruct(
        query, keys, values, radius=radius, temperature=0.7, tile=tile, ref_fusion=fusion
    )
    want = dense_reference(query, keys, values, radius, 0.7, fusion)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_per_pixel_radius_matches_dense():
    query, keys, values = random_inputs(7)
    pixel_radius = np.random.default_rng(0).integers(0, 5, size=query.shape[:3])
    got = jax.jit(
        lambda *a: correspondence.local_reconstruct(*a[:3], radius=4, temperature=1.0, tile=4, pixel_radius=a[3])
    )(query, keys, values, pixel_radius)
    want = dense_reference(query, keys, values, 4, 1.0, pixel_radius=pixel_radius)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_radius_zero_copies_the_same_position():
    _, keys, values = random_inputs(3, r=1)
    query = np.zeros(keys.shape[:1] + keys.shape[2:], np.float32)
    got = correspondence.local_reconstruct(query, keys, values, radius=0, temperature=1.0, tile=4)
    np.testing.assert_allclose(np.asarray(got), values[:, 0], atol=1e-6)


def test_gradient_matches_dense_gradient():
    query, keys, values = random_inputs(11, b=1, h=6, w=7)

    def local_loss(q):
        out = correspondence.local_reconstruct(q, keys, values, radius=2, temperature=1.0, tile=4)
        return jnp.sum(out**2)

    def dense_loss(q):
        h, w = q.shape[1:3]
        yy, xx = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
        pos = jnp.stack([yy.ravel(), xx.ravel()], -1)
        mask = jnp.abs(pos[:, None] - pos[None]).max(-1) <= 2
        logits = jnp.einsum("qc,rkc->qrk", q[0].reshape(h * w, -1), keys[0].reshape(keys.shape[1], h * w, -1))
        logits = jnp.where(mask[:, None, :], logits, -jnp.inf).reshape(h * w, -1)
        out = jax.nn.softmax(logits, -1) @ values[0].reshape(-1, values.shape[-1])
        return jnp.sum(out**2)

    np.testing.assert_allclose(jax.grad(local_loss)(query), jax.grad(dense_loss)(query), rtol=1e-4, atol=1e-5)


def test_never_materialises_a_dense_affinity():
    query, keys, values = random_inputs(0, b=1, r=2, h=32, w=32, c=4)
    hw = 32 * 32

    jaxpr = jax.make_jaxpr(
        jax.grad(lambda q: correspondence.local_reconstruct(q, keys, values, radius=2, temperature=1.0, tile=4).sum())
    )(query).jaxpr
    assert jaxpr_sizes.largest_intermediate(jaxpr) < hw * hw // 4


def test_bad_shapes_and_fusion_are_rejected():
    query, keys, values = random_inputs(0)
    with pytest.raises(ValueError, match="ref_fusion"):
        correspondence.local_reconstruct(query, keys, values, radius=1, temperature=1.0, tile=4, ref_fusion="mode")
    with pytest.raises(ValueError, match="query"):
        correspondence.local_reconstruct(query[:, :5], keys, values, radius=1, temperature=1.0, tile=4)
    with pytest.raises(ValueError, match="values"):
        correspondence.local_reconstruct(query, keys, values[:, :1], radius=1, temperature=1.0, tile=4)


@pytest.mark.parametrize("h,w,radius,tile", [(11, 13, 3, 4), (8, 8, 0, 4), (5, 9, 6, 8)])
def test_row_windows_cut_each_tiles_window_from_a_numpy_crop(h, w, radius, tile):
    x = np.random.default_rng(h + w).normal(size=(2, h, w, 3)).astype(np.float32)
    span = tile + 2 * radius
    ny, nx = -(-h // tile), -(-w // tile)
    padded = np.zeros((2, h + 2 * radius + span, w + 2 * radius + span, 3), np.float32)
    padded[:, radius : radius + h, radius : radius + w] = x
    cut = jax.jit(lambda p, y: correspondence.row_windows(p, y, radius, tile))
    windows = correspondence.reference_windows(x[None], radius, tile)[0]  # [nTy, nTx, 2, K, 3]
    for y in range(ny):
        got = np.asarray(cut(correspondence.pad_for_windows(x, radius, tile), y))  # [2, nTx, K, 3]
        assert got.shape == (2, nx, span * span, 3)
        for tx in range(nx):
            crop = padded[:, y * tile : y * tile + span, tx * tile : tx * tile + span]  # key (i, j) at y*tile+i-r
            np.testing.assert_array_equal(got[:, tx], crop.reshape(2, span * span, 3))
            np.testing.assert_array_equal(np.asarray(windows[y, tx]), crop.reshape(2, span * span, 3))


def test_window_logits_scale_and_mask():
    rng = np.random.default_rng(0)
    query, keys = rng.normal(size=(3, 4, 5)).astype(np.float32), rng.normal(size=(3, 2, 6, 5)).astype(np.float32)
    allowed = rng.random((3, 4, 2, 6)) > 0.5
    got = np.asarray(correspondence.window_logits(query, keys, allowed, 0.5))
    want = np.einsum("xqc,xrkc->xqrk", query.astype(np.float64), keys) / 0.5
    np.testing.assert_allclose(got[allowed], want[allowed], rtol=1e-5, atol=1e-5)
    assert (got[~allowed] == correspondence.MASKED_LOGIT).all()
    assert float(jax.nn.softmax(jnp.array([0.0, correspondence.MASKED_LOGIT]))[1]) == 0.0


def test_median_fusion_of_three_references_is_their_median_not_their_mean():
    query, keys, values = random_inputs(3, r=3)
    got = np.asarray(
        correspondence.local_reconstruct(query, keys, values, radius=2, temperature=0.7, tile=4, ref_fusion="median")
    )
    np.testing.assert_allclose(got, dense_reference(query, keys, values, 2, 0.7, "median"), rtol=1e-4, atol=1e-5)
    per_ref = [
        np.asarray(
            correspondence.local_reconstruct(query, keys[:, [r]], values[:, [r]], radius=2, temperature=0.7, tile=4)
        )
        for r in range(3)
    ]
    np.testing.assert_allclose(got, np.median(per_ref, axis=0), rtol=1e-5, atol=1e-6)
    assert np.abs(got - np.mean(per_ref, axis=0)).max() > 0.1  # With 2 references they would be equal.


def test_reconstruction_with_negatives_matches_a_dense_softmax():
    rng = np.random.default_rng(0)
    b, r, h, w, c, m = 2, 2, 5, 6, 4, 7
    query = rng.normal(size=(b, h, w, c)).astype(np.float32)
    keys = rng.normal(size=(b, r, h, w, c)).astype(np.float32)
    values = rng.normal(size=(b, r, h, w, 3)).astype(np.float32)
    neg_keys = rng.normal(size=(b, m, c)).astype(np.float32)
    neg_values = rng.normal(size=(b, m, 3)).astype(np.float32)
    neg_valid = rng.uniform(size=(b, m)) > 0.3
    out = correspondence.local_reconstruct_with_negatives(
        query, keys, values, neg_keys, neg_values, neg_valid, radius=1, temperature=0.5, tile=4
    )
    best = correspondence.local_reconstruct_with_negatives(
        query, keys, values, neg_keys, neg_values, neg_valid, radius=1, temperature=0.5, tile=4, positive="best"
    )
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], -1)
    window = np.abs(pos[:, None] - pos[None]).max(-1) <= 1
    for i in range(b):
        q = query[i].reshape(h * w, c).astype(np.float64)
        local = np.einsum("qc,rkc->qrk", q, keys[i].reshape(r, h * w, c)) / 0.5
        local = np.where(window[:, None, :], local, -np.inf).reshape(h * w, -1)
        negative = np.where(neg_valid[i][None], q @ neg_keys[i].T / 0.5, -np.inf)
        joint = np.concatenate([local, negative], -1)
        weights = np.exp(joint - joint.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        all_values = np.concatenate([values[i].reshape(r * h * w, 3), neg_values[i]])
        mass = weights[:, : local.shape[1]].sum(-1)
        positive = weights[:, : local.shape[1]] @ values[i].reshape(r * h * w, 3) / mass[:, None]
        np.testing.assert_allclose(np.asarray(out.joint[i]).reshape(-1, 3), weights @ all_values, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.positive[i]).reshape(-1, 3), positive, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.log_positive_mass[i]).ravel(), np.log(mass), rtol=1e-4, atol=1e-5)
        # 'best': the probability of the single window pixel of highest affinity.
        best_weight = np.take_along_axis(weights, np.argmax(local, -1)[:, None], -1)[:, 0]
        np.testing.assert_allclose(
            np.asarray(best.log_positive_mass[i]).ravel(), np.log(best_weight), rtol=1e-4, atol=1e-5
        )
        assert (best_weight <= mass + 1e-6).all() and (best_weight < mass - 1e-3).mean() > 0.5
    plain = correspondence.local_reconstruct(query, keys, values, radius=1, temperature=0.5, tile=4)
    np.testing.assert_allclose(np.asarray(out.positive), np.asarray(plain), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(best.joint), np.asarray(out.joint))  # Only the loss's positives differ.
    with pytest.raises(ValueError, match="positive must be one of"):
        correspondence.local_reconstruct_with_negatives(
            query, keys, values, neg_keys, neg_values, neg_valid, radius=1, temperature=0.5, tile=4, positive="all"
        )


def test_no_valid_negatives_means_no_positive_negative_loss():
    rng = np.random.default_rng(1)
    query, keys = rng.normal(size=(1, 4, 4, 3)), rng.normal(size=(1, 1, 4, 4, 3))
    values = rng.normal(size=(1, 1, 4, 4, 3))
    out = correspondence.local_reconstruct_with_negatives(
        query, keys, values, np.ones((1, 5, 3)), np.ones((1, 5, 3)), np.zeros((1, 5), bool), radius=1, temperature=1.0,
        tile=4,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(out.log_positive_mass), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.joint), np.asarray(out.positive), atol=1e-6)
