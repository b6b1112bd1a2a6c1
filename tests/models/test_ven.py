"""Value Extraction Network: position encoding, value map and the VEN forward pass, each against
an independent NumPy loop version (pooling, masking and attention by explicit loops)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax.models import ven


# ---------------------------------------------------------------------------------------------
# Position encoding
# ---------------------------------------------------------------------------------------------
def _np_position_encoding(height, width, dim):
    quarter = dim // 4
    out = np.zeros((height, width, dim))
    for y in range(height):
        for x in range(width):
            for k in range(quarter):
                freq = 10000.0 ** (-k / quarter)
                out[y, x, [k, quarter + k, 2 * quarter + k, 3 * quarter + k]] = [
                    np.sin(y * freq),
                    np.cos(y * freq),
                    np.sin(x * freq),
                    np.cos(x * freq),
                ]
    return out


def test_position_encoding_values():
    pe = np.asarray(ven.sincos_position_encoding(5, 6, 8))
    assert pe.shape == (5, 6, 8)
    # dim 8: frequencies 1 and 10000^(-1/2) = 0.01; channels [sin y, cos y, sin x, cos x] x 2 freqs.
    np.testing.assert_allclose(
        pe[2, 3],
        [np.sin(2), np.sin(0.02), np.cos(2), np.cos(0.02), np.sin(3), np.sin(0.03), np.cos(3), np.cos(0.03)],
        atol=1e-6,
    )
    np.testing.assert_allclose(pe[0, 0], [0, 0, 1, 1, 0, 0, 1, 1], atol=1e-7)
    np.testing.assert_allclose(pe, _np_position_encoding(5, 6, 8), atol=1e-5)


def test_position_encoding_positions_are_distinct():
    pe = np.asarray(ven.sincos_position_encoding(9, 11, 16)).reshape(-1, 16)
    distances = np.linalg.norm(pe[:, None] - pe[None], axis=-1)
    assert np.all(distances[~np.eye(len(pe), dtype=bool)] > 1e-3)
    with pytest.raises(ValueError, match="multiple of 4"):
        ven.sincos_position_encoding(3, 3, 6)


# ---------------------------------------------------------------------------------------------
# Value map
# ---------------------------------------------------------------------------------------------
def _np_window_slices(height, width, window):
    return [
        (slice(y, y + window), slice(x, x + window)) for y in range(0, height, window) for x in range(0, width, window)
    ]


def _np_value_map(target, refs, window, beta):
    """Loop reference of the value map: target [B, h, w, C], refs [B, R, h, w, C] -> [B, h, w]."""
    target, refs = np.asarray(target, np.float64), np.asarray(refs, np.float64)
    batch, height, width, _ = target.shape
    slices = _np_window_slices(height, width, window)

    def descriptors(feat):
        means = np.stack([feat[sy, sx].reshape(-1, feat.shape[-1]).mean(0) for sy, sx in slices])
        return means / np.linalg.norm(means, axis=-1, keepdims=True)

    out = np.zeros((batch, height, width))
    for b in range(batch):
        t = descriptors(target[b])
        seen_anywhere, seen_in_place = np.zeros(len(t)), np.zeros(len(t))
        for ref in refs[b]:
            cos = t @ descriptors(ref).T
            seen_anywhere += cos.max(axis=1) / len(refs[b])
            seen_in_place += np.diag(cos) / len(refs[b])
        raw = np.maximum(seen_anywhere - beta * seen_in_place, 0.0)
        value = raw / max(raw.max(), 1e-3)
        for (sy, sx), v in zip(slices, value):
            out[b, sy, sx] = v
    return out


@pytest.mark.parametrize("height,width,window", [(8, 12, 4), (11, 13, 4)])
def test_value_map_matches_numpy_reference(height, width, window):
    rng = np.random.default_rng(2)
    target = rng.normal(size=(2, height, width, 6)).astype(np.float32)
    refs = rng.normal(size=(2, 3, height, width, 6)).astype(np.float32)
    refs[:, 0, :4, :4] = target[:, :4, :4]  # one window seen in place, so Z is not always small
    got = np.asarray(ven.window_value_map(jnp.asarray(target), jnp.asarray(refs), window, 0.6))
    assert got.shape == (2, height, width)
    np.testing.assert_allclose(got, _np_value_map(target, refs, window, 0.6), atol=1e-5)


def test_the_window_scales_with_the_feature_grid():
    # The paper's 8 on its 64x64 grid: 8 windows per side. Half-to-even rounding: 8 * 12 / 64 = 1.5 -> 2.
    assert [ven.scaled_window(8, 64, side, 80) for side in (64, 32, 24, 16, 12, 4)] == [8, 4, 3, 2, 2, 1]
    assert ven.scaled_window(8, 64, 40, 24) == 3  # The shorter side.
    assert ven.scaled_window(5, 0, 64, 64) == 5  # 0: as given.
    with pytest.raises(ValueError, match="grid_reference must be a grid side"):
        ven.scaled_window(8, -1, 64, 64)
    rng = np.random.default_rng(4)
    target = jnp.asarray(rng.normal(size=(1, 24, 28, 6)).astype(np.float32))
    refs = jnp.asarray(rng.normal(size=(1, 2, 24, 28, 6)).astype(np.float32))
    np.testing.assert_array_equal(
        np.asarray(ven.window_value_map(target, refs, 8, 1.0, grid_reference=64)),
        np.asarray(ven.window_value_map(target, refs, 3, 1.0)),
    )


def _moving_object_scene(channels=64, seed=3):
    """Per-pixel random features: a static background and a 16x16 object moved by whole windows.

    Returns target [1, 48, 48, C], refs [1, 2, 48, 48, C] and boolean [6, 6] window masks of the
    target's object and of the background that is static in every frame (window = 8).
    """
    rng = np.random.default_rng(seed)
    background = rng.normal(size=(48, 48, channels)).astype(np.float32)
    texture = rng.normal(size=(16, 16, channels)).astype(np.float32)

    def frame(row, col):  # object's top-left in windows
        out = background.copy()
        out[8 * row : 8 * row + 16, 8 * col : 8 * col + 16] = texture
        return out

    placements = {"ref0": (1, 1), "ref1": (1, 2), "target": (3, 3)}
    covered = np.zeros((6, 6), bool)
    for row, col in placements.values():
        covered[row : row + 2, col : col + 2] = True
    target_object = np.zeros((6, 6), bool)
    target_object[3:5, 3:5] = True
    refs = np.stack([frame(*placements["ref0"]), frame(*placements["ref1"])])
    return frame(*placements["target"])[None], refs[None], target_object, ~covered


@pytest.mark.parametrize("beta,static_range", [(0.6, (0.25, 0.45)), (1.0, (0.0, 0.2))])
def test_value_map_scores_the_moving_object_high(beta, static_range):
    target, refs, target_object, static = _moving_object_scene()
    value = np.asarray(ven.window_value_map(jnp.asarray(target), jnp.asarray(refs), 8, beta))[0]
    per_window = value[::8, ::8]
    assert per_window[target_object].min() > 0.5
    # A static window has S = Z = 1: it scores (1 - beta) / max, about 0.4 at the spec's beta 0.6.
    assert static_range[0] <= per_window[static].min() and per_window[static].max() < static_range[1]


# ---------------------------------------------------------------------------------------------
# Value Extraction Network
# ---------------------------------------------------------------------------------------------
# A random output projection, so that the attention shows in the output (the default zero one is
# tested in test_zero_initialised_ven_starts_as_the_identity).
VEN_ARGS = dict(num_heads=2, kv_pool=2, window=4, beta=0.6, dropkey_rate=0.3, zero_init_out=False)


@pytest.fixture(scope="module")
def ven_setup():
    """Small odd-sized features (h, w not multiples of the pool or window) and VEN params."""
    rng = np.random.default_rng(4)
    target = jnp.asarray(rng.normal(size=(2, 7, 10, 8)).astype(np.float32))
    refs = jnp.asarray(rng.normal(size=(2, 2, 7, 10, 8)).astype(np.float32))
    model = ven.ValueExtractionNetwork(query_chunk=16, **VEN_ARGS)
    params = model.init(jax.random.PRNGKey(0), target, refs, train=False)["params"]
    return target, refs, params


@functools.lru_cache(maxsize=None)
def _jitted_apply(train, overrides):
    """One compiled VEN apply per (train, attribute overrides), shared across tests."""
    model = ven.ValueExtractionNetwork(**{"query_chunk": 16, **VEN_ARGS, **dict(overrides)})
    return jax.jit(lambda p, t, r, rng: model.apply({"params": p}, t, r, train=train, rngs={"dropkey": rng}))


def _apply(params, target, refs, *, train=False, rng=None, **overrides):
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return _jitted_apply(train, tuple(sorted(overrides.items())))(params, target, refs, rng)


def _np_ven(params, target, refs, *, heads, pool, radius, window, beta):
    """Loop reference of the VEN forward pass in float64; returns (features, value_map)."""
    params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    target, refs = np.asarray(target, np.float64), np.asarray(refs, np.float64)
    batch, height, width, channels = target.shape
    head_dim = channels // heads

    def dense(x, name):
        return x @ params[name]["kernel"] + (params[name]["bias"] if "bias" in params[name] else 0.0)

    value = _np_value_map(target, refs, window, beta)
    pe = _np_position_encoding(height, width, channels)
    embedding = dense(np.maximum(dense(value[..., None], "value_mlp_hidden"), 0), "value_mlp_out") + pe
    query = dense(target + embedding, "query")
    rows, cols = -(-height // pool), -(-width // pool)
    key_in = np.zeros((*refs.shape[:2], rows, cols, channels))
    value_in = np.zeros_like(key_in)
    for i in range(rows):
        for j in range(cols):
            sy, sx = slice(i * pool, (i + 1) * pool), slice(j * pool, (j + 1) * pool)
            key_in[:, :, i, j] = (refs + pe)[:, :, sy, sx].mean(axis=(2, 3))
            value_in[:, :, i, j] = refs[:, :, sy, sx].mean(axis=(2, 3))
    keys, values = dense(key_in, "key"), dense(value_in, "value")
    attended = np.zeros_like(target)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                chosen = [
                    (r, i, j)
                    for r in range(refs.shape[1])
                    for i in range(rows)
                    for j in range(cols)
                    if radius is None or max(abs(y // pool - i), abs(x // pool - j)) <= radius
                ]
                k = np.stack([keys[b, r, i, j] for r, i, j in chosen])
                v = np.stack([values[b, r, i, j] for r, i, j in chosen])
                for h in range(heads):
                    part = slice(h * head_dim, (h + 1) * head_dim)
                    logits = k[:, part] @ query[b, y, x, part] / np.sqrt(head_dim)
                    weights = np.exp(logits - logits.max())
                    attended[b, y, x, part] = (weights / weights.sum()) @ v[:, part]
    return target + dense(attended, "out"), value


@pytest.mark.parametrize("radius", [None, 1])
def test_ven_matches_numpy_reference(ven_setup, radius):
    target, refs, params = ven_setup
    out = _apply(params, target, refs, radius=radius)
    assert out.features.shape == target.shape and out.value_map.shape == target.shape[:3]
    want_features, want_value = _np_ven(params, target, refs, heads=2, pool=2, radius=radius, window=4, beta=0.6)
    np.testing.assert_allclose(np.asarray(out.value_map), want_value, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.features), want_features, atol=1e-4)


def test_zero_initialised_ven_starts_as_the_identity(ven_setup):
    """With the default zero output projection, f~_t = f_t exactly at initialisation, and the loss
    still has a gradient on W_o (the attention's output), so the VEN can grow from there."""
    target, refs, _ = ven_setup
    model = ven.ValueExtractionNetwork(query_chunk=16, **{**VEN_ARGS, "zero_init_out": True})
    params = model.init(jax.random.PRNGKey(0), target, refs, train=False)["params"]
    np.testing.assert_array_equal(np.asarray(params["out"]["kernel"]), 0.0)
    out = model.apply({"params": params}, target, refs, train=False)
    np.testing.assert_array_equal(np.asarray(out.features), np.asarray(target))

    def loss(p):
        return jnp.sum(model.apply({"params": p}, target, refs, train=False).features ** 2)

    grads = jax.grad(loss)(params)
    assert float(jnp.abs(grads["out"]["kernel"]).max()) > 1e-3
    np.testing.assert_array_equal(np.asarray(grads["query"]["kernel"]), 0.0)  # Behind W_o = 0.


def test_ven_radius_restricts_attention(ven_setup):
    target, refs, params = ven_setup
    global_out = np.asarray(_apply(params, target, refs).features)
    assert not np.allclose(np.asarray(_apply(params, target, refs, radius=0).features), global_out, atol=1e-4)
    np.testing.assert_allclose(np.asarray(_apply(params, target, refs, radius=5).features), global_out, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("radius", [None, 1])
def test_chunked_attention_equals_unchunked(ven_setup, radius, train):
    """Also in training: query i's DropKey row comes from fold_in(rng, i), whatever the chunking
    (the default kernel; the other equals it: test_fused_ven_equals_chunked_ven)."""
    target, refs, params = ven_setup
    kwargs = dict(radius=radius, train=train, rng=jax.random.PRNGKey(7))
    chunked = _apply(params, target, refs, query_chunk=16, **kwargs)  # 70 queries: 5 chunks, last padded
    whole = _apply(params, target, refs, query_chunk=10_000, **kwargs)
    np.testing.assert_allclose(np.asarray(chunked.features), np.asarray(whole.features), atol=1e-5)


def test_dropkey_mask_drop_fraction():
    shape = (8, 4, 64, 64)
    dropped = np.asarray(ven.dropkey_mask(jax.random.PRNGKey(5), shape, 0.3))
    assert dropped.dtype == bool and dropped.shape == shape
    sigma = np.sqrt(0.3 * 0.7 / dropped.size)
    assert abs(dropped.mean() - 0.3) < 5 * sigma
    assert not np.asarray(ven.dropkey_mask(jax.random.PRNGKey(5), shape, 0.0)).any()


def test_dropkey_is_random_in_training_and_off_in_eval(ven_setup):
    target, refs, params = ven_setup
    eval_a = np.asarray(_apply(params, target, refs, rng=jax.random.PRNGKey(1)).features)
    eval_b = np.asarray(_apply(params, target, refs, rng=jax.random.PRNGKey(2)).features)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a = np.asarray(_apply(params, target, refs, train=True, rng=jax.random.PRNGKey(1)).features)
    train_a2 = np.asarray(_apply(params, target, refs, train=True, rng=jax.random.PRNGKey(1)).features)
    train_b = np.asarray(_apply(params, target, refs, train=True, rng=jax.random.PRNGKey(2)).features)
    np.testing.assert_array_equal(train_a, train_a2)
    assert np.all(np.isfinite(train_a))
    assert not np.allclose(train_a, eval_a, atol=1e-4) and not np.allclose(train_a, train_b, atol=1e-4)


def test_fully_dropped_rows_fall_back_to_all_keys(ven_setup):
    """With rate 1 every logit is dropped, so every row falls back to its undropped keys: eval output."""
    target, refs, params = ven_setup
    for radius in (None, 1):
        train = _apply(params, target, refs, train=True, rng=jax.random.PRNGKey(3), radius=radius, dropkey_rate=1.0)
        np.testing.assert_allclose(
            np.asarray(train.features), np.asarray(_apply(params, target, refs, radius=radius).features), atol=1e-6
        )


def test_ven_gradients_are_finite_with_dropkey_and_radius(ven_setup):
    target, refs, params = ven_setup
    model = ven.ValueExtractionNetwork(query_chunk=16, radius=1, **VEN_ARGS)

    def loss(p, t, r):
        out = model.apply({"params": p}, t, r, train=True, rngs={"dropkey": jax.random.PRNGKey(6)})
        return jnp.sum(out.features**2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, target, refs)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert float(jnp.abs(grads[0]["query"]["kernel"]).sum()) > 0  # the attention path trains


def test_ven_rejects_bad_shapes(ven_setup):
    target, refs, params = ven_setup
    with pytest.raises(ValueError, match="refs"):
        _apply(params, target, refs[:, :, :5])
    with pytest.raises(ValueError, match="num_heads"):
        _apply(params, target, refs, num_heads=3)
    with pytest.raises(ValueError, match="unknown attention"):
        _apply(params, target, refs, attention="flash")


# ---------------------------------------------------------------------------------------------
# Attention kernels: 'fused' (jax.nn.dot_product_attention) against 'chunked' and NumPy
# ---------------------------------------------------------------------------------------------
def _assert_trees_close(got, want, rtol):
    """Every leaf within rtol of the leaf's largest magnitude (so near-zero entries do not need a
    relative match of their own rounding)."""
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        w = np.asarray(w, np.float64)
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=rtol * np.abs(w).max())


@functools.lru_cache(maxsize=None)
def _jitted_value_and_grad(train, overrides):
    """Features and the gradient of a fixed random projection of them, for (params, target, refs)."""
    model = ven.ValueExtractionNetwork(**{"query_chunk": 16, **VEN_ARGS, **dict(overrides)})

    def features(p, t, r, rng):
        return model.apply({"params": p}, t, r, train=train, rngs={"dropkey": rng}).features

    def loss(p, t, r, rng, cotangent):
        return jnp.sum(features(p, t, r, rng) * cotangent)

    return jax.jit(
        lambda p, t, r, rng, cot: (features(p, t, r, rng), jax.grad(loss, argnums=(0, 1, 2))(p, t, r, rng, cot))
    )


@pytest.mark.parametrize("radius,train", [(None, False), (1, True)])
def test_fused_ven_equals_chunked_ven(ven_setup, radius, train):
    """Same output and gradients (params, target, refs); in training with the same DropKey rng the
    same logits are dropped, so the results still agree to rounding."""
    target, refs, params = ven_setup
    cotangent = jnp.asarray(np.random.default_rng(8).normal(size=target.shape).astype(np.float32))
    results = {
        attention: _jitted_value_and_grad(train, (("attention", attention), ("radius", radius)))(
            params, target, refs, jax.random.PRNGKey(9), cotangent
        )
        for attention in ven.ATTENTION_KERNELS
    }
    _assert_trees_close(results["fused"], results["chunked"], rtol=1e-5)
    # A different DropKey draw moves the output by far more than the tolerance: the check can fail.
    if train:
        other = _jitted_value_and_grad(train, (("attention", "fused"), ("radius", radius)))(
            params, target, refs, jax.random.PRNGKey(10), cotangent
        )
        with pytest.raises(AssertionError):
            _assert_trees_close(other[0], results["chunked"][0], rtol=1e-5)


# A 4x5 query grid over 2 refs pooled by 2 (2x3 cells each): 20 queries, 12 keys, 2 heads of 4.
_GRID, _POOL, _REFS, _HEADS, _DIM = (4, 5), 2, 2, 2, 4


def _cells():
    """[20, 2] pooled cells of the queries and [12, 2] cells of the keys (refs concatenated)."""
    rows, cols = _GRID
    query_cells = np.array([(y // _POOL, x // _POOL) for y in range(rows) for x in range(cols)], np.int32)
    ref_cells = [(i, j) for i in range(-(-rows // _POOL)) for j in range(-(-cols // _POOL))]
    return query_cells, np.array(ref_cells * _REFS, np.int32)


def _np_allowed(query_cells, key_cells, radius, dropped):
    """bool [B, H, Nq, Nk]: keys within the radius, less the dropped ones unless none would remain."""
    batch, heads = dropped.shape[:2]
    allowed = np.zeros(dropped.shape, bool)
    for i, (y, x) in enumerate(query_cells):
        within = np.array([radius is None or max(abs(y - ky), abs(x - kx)) <= radius for ky, kx in key_cells])
        for b in range(batch):
            for h in range(heads):
                kept = within & ~dropped[b, h, i]
                allowed[b, h, i] = kept if kept.any() else within
    return allowed


def _np_attention(q, k, v, cotangent, allowed):
    """Masked multi-head attention and its gradients by loops in float64.

    q [B, Nq, H, d]; k, v [B, Nk, H, d]; cotangent [B, Nq, H, d] of the output; allowed [B, H, Nq, Nk].
    Returns the output [B, Nq, H, d] and (dq, dk, dv) of sum(output * cotangent).
    """
    q, k, v, cotangent = (np.asarray(x, np.float64) for x in (q, k, v, cotangent))
    scale = q.shape[-1] ** -0.5
    out, dq, dk, dv = np.zeros_like(q), np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    batch, num_queries, heads, _ = q.shape
    for b in range(batch):
        for h in range(heads):
            for i in range(num_queries):
                keys = np.flatnonzero(allowed[b, h, i])
                logits = scale * k[b, keys, h] @ q[b, i, h]
                p = np.exp(logits - logits.max())
                p /= p.sum()
                out[b, i, h] = p @ v[b, keys, h]
                dv[b, keys, h] += p[:, None] * cotangent[b, i, h]
                dp = v[b, keys, h] @ cotangent[b, i, h]
                dlogits = p * (dp - p @ dp)
                dq[b, i, h] = scale * dlogits @ k[b, keys, h]
                dk[b, keys, h] += scale * dlogits[:, None] * q[b, i, h]
    return out, (dq, dk, dv)


@pytest.mark.parametrize("attention", list(ven.ATTENTION_KERNELS))
@pytest.mark.parametrize("radius,rate", [(None, 0.0), (1, 0.0), (None, 0.9), (0, 0.5), (1, 0.8)])
def test_multi_head_attention_matches_numpy(attention, radius, rate):
    """Forward and gradients against NumPy loops, with query i's DropKey row drawn by
    dropkey_mask(fold_in(rng, i), [B, H, Nk]); the rates make some rows lose every key."""
    rng = np.random.default_rng(11)
    query_cells, key_cells = _cells()
    batch, num_queries, num_keys = 2, len(query_cells), len(key_cells)
    q = jnp.asarray(rng.normal(size=(batch, num_queries, _HEADS, _DIM)).astype(np.float32))
    k, v = (jnp.asarray(rng.normal(size=(batch, num_keys, _HEADS, _DIM)).astype(np.float32)) for _ in range(2))
    cotangent = rng.normal(size=q.shape).astype(np.float32)
    drop_rng = jax.random.PRNGKey(12) if rate > 0 else None

    def attend(q, k, v):
        return ven.multi_head_attention(
            q, k, v, attention=attention, chunk=8, query_cells=query_cells, key_cells=key_cells,
            radius=radius, drop_rng=drop_rng, drop_rate=rate,
        )  # fmt: skip

    out, grads = jax.jit(
        lambda q, k, v: (attend(q, k, v), jax.grad(lambda *a: jnp.sum(attend(*a) * cotangent), (0, 1, 2))(q, k, v))
    )(q, k, v)

    dropped = np.zeros((batch, _HEADS, num_queries, num_keys), bool)
    if drop_rng is not None:
        rows = [ven.dropkey_mask(jax.random.fold_in(drop_rng, i), dropped.shape[:2] + dropped.shape[3:], rate)
                for i in range(num_queries)]  # fmt: skip
        dropped = np.stack([np.asarray(row) for row in rows], axis=2)
    within = _np_allowed(query_cells, key_cells, radius, np.zeros_like(dropped))
    allowed = _np_allowed(query_cells, key_cells, radius, dropped)
    if rate > 0:  # DropKey removes keys, and some rows lose every key and fall back
        assert (allowed != within).any() and (~(within & ~dropped).any(-1)).any()
    want_out, want_grads = _np_attention(q, k, v, cotangent, allowed)
    _assert_trees_close((out, grads), (want_out, want_grads), rtol=1e-5)
