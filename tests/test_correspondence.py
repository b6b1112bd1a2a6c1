"""Local-window reconstruction against a dense masked softmax written in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax import correspondence


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

    def largest_intermediate(jaxpr):
        """Largest array produced anywhere in the jaxpr, nested jaxprs (jit, custom_jvp) included."""
        sizes = [0]
        for eqn in jaxpr.eqns:
            sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars]
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    sizes.append(largest_intermediate(inner))
        return max(sizes)

    jaxpr = jax.make_jaxpr(
        jax.grad(lambda q: correspondence.local_reconstruct(q, keys, values, radius=2, temperature=1.0, tile=4).sum())
    )(query).jaxpr
    assert largest_intermediate(jaxpr) < hw * hw // 4


def test_bad_shapes_and_fusion_are_rejected():
    query, keys, values = random_inputs(0)
    with pytest.raises(ValueError, match="ref_fusion"):
        correspondence.local_reconstruct(query, keys, values, radius=1, temperature=1.0, tile=4, ref_fusion="mode")
    with pytest.raises(ValueError, match="query"):
        correspondence.local_reconstruct(query[:, :5], keys, values, radius=1, temperature=1.0, tile=4)
    with pytest.raises(ValueError, match="values"):
        correspondence.local_reconstruct(query, keys, values[:, :1], radius=1, temperature=1.0, tile=4)
