"""ResNet-18 stride-4 encoder: shapes, parameter count, init and BatchNorm modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax.models import encoder as encoder_lib

NARROW = dict(embed_dim=8, stem_width=8, stage_widths=(8, 16, 16, 16))


@pytest.mark.parametrize("height,width", [(32, 32), (30, 45), (17, 9)])
def test_output_is_stride_4(height, width):
    model = encoder_lib.Encoder(**NARROW)
    x = jnp.zeros((2, height, width, 3))
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x)[0])
    assert out.shape == (2, -(-height // 4), -(-width // 4), 8)


def test_paper_encoder_parameter_count():
    """ResNet-18 with layer3/layer4 at 256 channels and a 3x3 head to 64, counted by hand."""

    def conv(k, cin, cout, bias=False):
        return k * k * cin * cout + (cout if bias else 0)

    def block(cin, cout):
        n = conv(3, cin, cout) + conv(3, cout, cout) + 2 * 2 * cout
        return n + (conv(1, cin, cout) + 2 * cout if cin != cout else 0)

    want = conv(7, 3, 64) + 2 * 64
    for cin, cout in [(64, 64), (64, 128), (128, 256), (256, 256)]:
        want += block(cin, cout) + block(cout, cout)
    want += conv(3, 256, 64, bias=True)
    variables = jax.eval_shape(encoder_lib.Encoder().init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    got = sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
    assert got == want


def test_last_bn_of_each_block_starts_at_zero_so_blocks_start_as_identity():
    model = encoder_lib.Encoder(**NARROW)
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    block = variables["params"]["BasicBlock_1"]  # stage 1, second block: same width, stride 1
    np.testing.assert_array_equal(block["_Norm_1"]["BatchNorm_0"]["scale"], 0.0)
    np.testing.assert_array_equal(block["_Norm_0"]["BatchNorm_0"]["scale"], 1.0)
    inputs = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(2), (1, 8, 8, 8)))
    out = encoder_lib.BasicBlock(8, 1, "frozen").apply(
        {"params": block, "batch_stats": variables["batch_stats"]["BasicBlock_1"]}, inputs, False
    )
    np.testing.assert_allclose(out, inputs, atol=1e-6)


def test_frozen_bn_keeps_statistics_batch_mode_updates_them():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3)) * 3 + 1
    for mode, should_change in [("frozen", False), ("batch", True)]:
        model = encoder_lib.Encoder(**NARROW, bn_mode=mode)
        variables = model.init(jax.random.PRNGKey(0), x)
        _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        before = jax.tree.leaves(variables["batch_stats"])
        after = jax.tree.leaves(updates["batch_stats"])
        changed = any(not np.allclose(a, b) for a, b in zip(before, after))
        assert changed == should_change, mode


def test_pos_embed_is_resized_for_other_sizes():
    model = encoder_lib.Encoder(**NARROW, pos_embed=True)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    assert variables["params"]["pos_embedding"].shape == (16, 16, 8)
    assert model.apply(variables, jnp.zeros((1, 48, 40, 3))).shape == (1, 12, 10, 8)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="bn_mode"):
        encoder_lib.Encoder(**NARROW, bn_mode="sync").init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


def test_scaled_input_matches_the_combined_image_in_value_and_every_gradient():
    """A ScaledInput's scale gets its gradient from a forward convolution of the offset (no stem
    input gradient): value and gradients (scale, parameters, base, offset) are those of the plain
    image base + scale * offset, differentiated by JAX."""
    model = encoder_lib.Encoder(**NARROW)
    rng = np.random.default_rng(0)
    base, offset, g = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in [(2, 18, 22, 5)] * 2 + [(2, 5, 6, 8)])
    variables = model.init(jax.random.PRNGKey(0), base)
    variables = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.PRNGKey(3), v.shape), variables)

    def loss(params, base, offset, scale, scaled: bool):
        x = encoder_lib.ScaledInput(base, offset, scale)
        out = model.apply({**variables, "params": params}, x if scaled else x.combined())
        return jnp.sum(out * g)

    args = (variables["params"], base, offset, jnp.float32(0.7))
    value_and_grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)), static_argnames="scaled")
    want_value, want_grads = value_and_grads(*args, scaled=False)
    value, grads = value_and_grads(*args, scaled=True)
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
    assert abs(float(want_grads[3])) > 1.0  # The scale's gradient is not trivially small.
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
