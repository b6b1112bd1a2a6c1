"""Flow fusion: the colour-wheel flow image against hand-derived colours, and the fused frames
against their definition O = I + alpha * G(F)."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax import color
from mer_jax.models import flow_fusion

LAB_MEAN = (50.0, 0.0, 0.0)
LAB_STD = (50.0, 127.0, 127.0)


# ---------------------------------------------------------------------------------------------
# flow_to_color
# ---------------------------------------------------------------------------------------------
# The 55 wheel hues sit evenly around the circle, entry k at angle 2 pi k / 55, with segments
# red->yellow (15), yellow->green (6), green->cyan (4), cyan->blue (11), blue->magenta (13),
# magenta->red (6). So angle 0 (+x) is entry 0 = red; +y (pi/2, image y down) is position 13.75,
# inside red->yellow: (1, 13.75/15, 0); -x (pi) is 27.5 = cyan->blue step 2.5: (0, 1 - 2.5/11, 1);
# -y (3 pi/2) is 41.25 = blue->magenta step 5.25: (5.25/13, 0, 1).
WHEEL_CASES = [
    ((1.0, 0.0), (1.0, 0.0, 0.0)),
    ((0.0, 1.0), (1.0, 13.75 / 15, 0.0)),
    ((-1.0, 0.0), (0.0, 1.0 - 2.5 / 11, 1.0)),
    ((0.0, -1.0), (5.25 / 13, 0.0, 1.0)),
]


def _flow_image(vectors):
    """[1, len(vectors), 2] flow image from a list of (dx, dy)."""
    return jnp.asarray(np.asarray(vectors, np.float32)[None])


def test_zero_flow_is_white():
    rgb = flow_fusion.flow_to_color(jnp.zeros((2, 3, 4, 2)))
    assert rgb.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(np.asarray(rgb), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(flow_fusion.flow_to_color(jnp.zeros((3, 4, 2)), max_radius=2.0)), 1.0, atol=1e-6
    )


@pytest.mark.parametrize("direction,want", WHEEL_CASES)
def test_cardinal_directions_at_full_magnitude(direction, want):
    flow = _flow_image([[3.0 * direction[0], 3.0 * direction[1]]])
    np.testing.assert_allclose(np.asarray(flow_fusion.flow_to_color(flow, max_radius=3.0))[0, 0], want, atol=1e-5)


def test_magnitude_sets_saturation_and_out_of_range_is_darkened():
    flow = _flow_image([[1.0, 0.0], [0.5, 0.0], [4.0, 0.0], [0.0, -0.25]])
    rgb = np.asarray(flow_fusion.flow_to_color(flow, max_radius=1.0))[0]
    np.testing.assert_allclose(rgb[0], [1.0, 0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(rgb[1], [1.0, 0.5, 0.5], atol=1e-5)  # halfway from white to red
    np.testing.assert_allclose(rgb[2], [0.75, 0.0, 0.0], atol=1e-5)  # beyond max_radius
    np.testing.assert_allclose(rgb[3], 1.0 - 0.25 * (1.0 - np.array([5.25 / 13, 0.0, 1.0])), atol=1e-5)


def test_default_radius_is_each_images_own_maximum():
    flow = np.zeros((2, 1, 2, 2), np.float32)
    flow[0, 0, 0] = (6.0, 0.0)
    flow[0, 0, 1] = (3.0, 0.0)
    flow[1, 0, 0] = (0.0, 0.2)  # a tiny flow still reaches full saturation in its own image
    rgb = np.asarray(jax.jit(flow_fusion.flow_to_color)(jnp.asarray(flow)))
    np.testing.assert_allclose(rgb[0, 0, 0], [1.0, 0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(rgb[0, 0, 1], [1.0, 0.5, 0.5], atol=1e-4)
    np.testing.assert_allclose(rgb[1, 0, 0], [1.0, 13.75 / 15, 0.0], atol=1e-4)
    np.testing.assert_allclose(rgb[1, 0, 1], [1.0, 1.0, 1.0], atol=1e-6)


def test_hue_is_continuous_across_the_wheel_seam():
    angles = np.array([-1e-3, 0.0, 1e-3, 2 * np.pi - 1e-3])
    flow = _flow_image(np.stack([np.cos(angles), np.sin(angles)], -1))
    rgb = np.asarray(flow_fusion.flow_to_color(flow, max_radius=1.0))[0]
    np.testing.assert_allclose(rgb, np.broadcast_to([1.0, 0.0, 0.0], rgb.shape), atol=0.02)


def test_flow_to_color_rejects_bad_shapes():
    with pytest.raises(ValueError, match="flow"):
        flow_fusion.flow_to_color(jnp.zeros((4, 4, 3)))


# ---------------------------------------------------------------------------------------------
# FlowFusion
# ---------------------------------------------------------------------------------------------
def _frames_and_flow(seed=0, shape=(2, 5, 7)):
    rng = np.random.default_rng(seed)
    frames = jnp.asarray(rng.uniform(-1, 1, (*shape, 3)).astype(np.float32))
    flow = jnp.asarray(rng.normal(0, 3, (*shape, 2)).astype(np.float32))
    return frames, flow


def _cv2_normalized_lab(rgb):
    """Independent Lab of float RGB [..., 3] through OpenCV, normalised as frames."""
    rgb = np.asarray(rgb, np.float32)
    lab = cv2.cvtColor(rgb.reshape(-1, 1, 3), cv2.COLOR_RGB2Lab).reshape(rgb.shape)
    return (lab - np.array(LAB_MEAN)) / np.array(LAB_STD)


@pytest.mark.parametrize("encoding", ["color", "conv"])
def test_fusion_adds_alpha_times_encoded_flow(encoding):
    frames, flow = _frames_and_flow()
    model = flow_fusion.FlowFusion(encoding=encoding, lab_mean=LAB_MEAN, lab_std=LAB_STD, alpha_init=0.1)
    params = model.init(jax.random.PRNGKey(0), frames, flow)["params"]
    assert float(params["alpha"]) == pytest.approx(0.1)
    if encoding == "color":
        rgb = flow_fusion.flow_to_color(flow)
        encoded = np.asarray(color.normalize_lab(color.rgb_to_lab(rgb), LAB_MEAN, LAB_STD))
        np.testing.assert_allclose(encoded, _cv2_normalized_lab(rgb), atol=1e-2)
    else:
        assert set(params) == {"alpha", "flow_conv"}
        kernel = np.asarray(params["flow_conv"]["kernel"])  # [2, 3]
        scaled = np.asarray(flow) / np.array([7.0, 5.0])  # (dx / W, dy / H)
        encoded = np.einsum("...i,io->...o", scaled, kernel)
    params = {**params, "alpha": jnp.asarray(0.7)}
    out = jax.jit(model.apply)({"params": params}, frames, flow).combined()
    np.testing.assert_allclose(np.asarray(out), np.asarray(frames) + 0.7 * encoded, atol=1e-5)


def test_channels_encoding_hand_case():
    """'channels': two more input channels alpha * (dx / W, dy / H) / scale; colour untouched."""
    frames, _ = _frames_and_flow(shape=(1, 5, 7))  # H = 5, W = 7
    frames = frames.at[..., 1].set(0.0)  # A channel zeroed by channel dropout.
    flow = jnp.broadcast_to(jnp.asarray([1.4, -0.5], jnp.float32), (1, 5, 7, 2))
    model = flow_fusion.FlowFusion(encoding="channels", lab_mean=LAB_MEAN, lab_std=LAB_STD, alpha_init=0.5, scale=0.02)
    params = model.init(jax.random.PRNGKey(0), frames, flow)["params"]
    assert set(params) == {"alpha"}
    out = np.asarray(model.apply({"params": params}, frames, flow).combined())
    assert out.shape == (1, 5, 7, 5)
    np.testing.assert_array_equal(out[..., :3], np.asarray(frames))  # The dropped channel stays zero.
    np.testing.assert_allclose(out[..., 3], 0.5 * 1.4 / 7 / 0.02, rtol=1e-5)  # = 5.0
    np.testing.assert_allclose(out[..., 4], 0.5 * -0.5 / 5 / 0.02, rtol=1e-5)  # = -2.5
    # A fixed scale: the same relative motion at twice the size encodes the same, whatever else the
    # image holds; the opposite motion encodes to the opposite values.
    big = model.apply(
        {"params": params}, jnp.zeros((1, 10, 14, 3)), jnp.broadcast_to(2 * flow[:, :1, :1], (1, 10, 14, 2))
    ).combined()
    np.testing.assert_allclose(np.asarray(big)[..., 3:], np.broadcast_to(out[:, :1, :1, 3:], (1, 10, 14, 2)), rtol=1e-5)
    reverse = np.asarray(model.apply({"params": params}, frames, -flow).combined())
    np.testing.assert_allclose(reverse[..., 3:], -out[..., 3:], rtol=1e-6)
    grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, frames, flow).combined()))(params)
    assert float(grads["alpha"]) == pytest.approx(35 * (1.4 / 7 - 0.5 / 5) / 0.02, rel=1e-4)


@pytest.mark.parametrize("encoding", ["color", "conv"])
def test_gradient_reaches_alpha(encoding):
    frames, flow = _frames_and_flow(1)
    model = flow_fusion.FlowFusion(encoding=encoding, lab_mean=LAB_MEAN, lab_std=LAB_STD)
    params = model.init(jax.random.PRNGKey(1), frames, flow)["params"]
    grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, frames, flow).combined()))(params)
    # d sum(I + alpha G) / d alpha = sum(G) = sum(O - I) / alpha.
    fused = model.apply({"params": params}, frames, flow).combined()
    want = float(jnp.sum(fused - frames)) / float(params["alpha"])
    assert float(grads["alpha"]) == pytest.approx(want, rel=1e-3)
    assert abs(float(grads["alpha"])) > 1e-3


def test_fusion_rejects_unknown_encoding_and_mismatched_shapes():
    frames, flow = _frames_and_flow()
    with pytest.raises(ValueError, match="encoding"):
        flow_fusion.FlowFusion(encoding="hsv", lab_mean=LAB_MEAN, lab_std=LAB_STD).init(
            jax.random.PRNGKey(0), frames, flow
        )
    with pytest.raises(ValueError, match="flow"):
        flow_fusion.FlowFusion(encoding="conv", lab_mean=LAB_MEAN, lab_std=LAB_STD).init(
            jax.random.PRNGKey(0), frames, flow[:, :4]
        )
