"""Tests for the analytic conv and dot FLOP count (bench/flop_count.py) against hand counts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from bench import flop_count

# Hand counts for TinyNet on a [2, 9, 9, 3] input (2 FLOPs per multiply-add).
# conv1: 3x3, stride 2, VALID, 3 -> 16: output [2, 4, 4, 16], every tap on a real pixel.
CONV1 = 2 * (2 * 4 * 4 * 16) * (3 * 3 * 3)  # 27_648
# conv2: 3x3, stride 1, SAME (1 padding pixel per side), 4 groups, 16 -> 32 on the 4x4 map:
# 4 input features per group; per spatial dim 4 outputs x 3 taps = 12 pairs, less the 2 that
# fall on padding (first output's left tap, last output's right tap) = 10.
CONV2 = 2 * (2 * 32) * 4 * (10 * 10)  # 51_200
# dense: [2, 4*4*32 = 512] @ [512, 10].
DENSE = 2 * (2 * 10) * 512  # 20_480


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2), padding="VALID")(x))
        x = nn.relu(nn.Conv(32, (3, 3), padding="SAME", feature_group_count=4)(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def net():
    model = TinyNet()
    x = jnp.ones((2, 9, 9, 3))
    return model, model.init(jax.random.PRNGKey(0), x), x


def test_forward_count_is_the_hand_count(net):
    model, variables, x = net
    count = flop_count.count_flops(model.apply, variables, x)
    assert count.conv == CONV1 + CONV2 == 78_848
    assert count.dot == DENSE


def test_gradient_counts_forward_plus_input_and_weight_gradients(net):
    """Each conv and the dense layer add an input-gradient and a weight-gradient product as costly
    as itself (padding, stride and groups included): 3x the forward."""
    model, variables, x = net

    def loss(params, x):
        return model.apply({"params": params}, x).sum()

    count = flop_count.count_flops(jax.grad(loss, argnums=(0, 1)), variables["params"], x)
    assert count.conv == 3 * (CONV1 + CONV2)
    assert count.dot == 3 * DENSE
    # Without the gradient of the input, conv1's input gradient is never built.
    count = flop_count.count_flops(jax.grad(loss), variables["params"], x)
    assert count.conv == 2 * CONV1 + 3 * CONV2
    assert count.dot == 3 * DENSE


def test_nested_jaxprs_scan_times_length_cond_costliest_branch():
    w = jnp.ones((8, 8))
    matmul = 2 * 4 * 8 * 8  # [4, 8] @ [8, 8]

    def scanned(h):
        return jax.lax.scan(lambda h, _: (h @ w, None), h, None, length=5)[0]

    def branched(h):
        return jax.lax.cond(h.sum() > 0, lambda h: h @ w @ w, lambda h: h, h)

    h = jnp.ones((4, 8))
    assert flop_count.count_flops(jax.jit(scanned), h) == flop_count.FlopCount(0.0, 5.0 * matmul)
    assert flop_count.count_flops(branched, h).dot == 2 * matmul
