"""Lab conversion against OpenCV and hand-computed values; channel dropout semantics."""

import cv2
import jax
import numpy as np

from mer_jax import color


def numpy_lab(rgb):
    """CIE 1976 L*a*b* (D65) from gamma-encoded sRGB, float64, straight from the definitions."""
    rgb = np.asarray(rgb, np.float64)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
    xyz = lin @ m.T / np.array([0.950456, 1.0, 1.088754])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def random_rgb():
    rgb = np.random.default_rng(0).uniform(size=(64, 48, 3)).astype(np.float32)
    rgb[0, :4] = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0.02, 0.03, 0.01]]  # incl. the linear sRGB segment
    return rgb


def test_rgb_to_lab_matches_the_cie_definitions():
    rgb = random_rgb()
    np.testing.assert_allclose(np.asarray(color.rgb_to_lab(rgb)), numpy_lab(rgb), atol=2e-3)


def test_rgb_to_lab_agrees_with_opencv():
    # OpenCV's float path interpolates the sRGB gamma with a spline: up to ~0.35 off near black.
    rgb = random_rgb()
    np.testing.assert_allclose(np.asarray(color.rgb_to_lab(rgb)), cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab), atol=0.5)


def test_known_lab_values():
    lab = np.asarray(color.rgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.01)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=0.01)
    # Mid grey: sRGB 0.5 -> linear 0.21404 -> L = 116 * Y^(1/3) - 16 = 53.389.
    np.testing.assert_allclose(lab[2], [53.389, 0.0, 0.0], atol=0.01)


def test_normalized_lab_of_uint8():
    frames = np.array([[[255, 255, 255], [0, 0, 0]]], np.uint8)
    out = np.asarray(color.uint8_rgb_to_normalized_lab(frames, (50.0, 0.0, 0.0), (50.0, 127.0, 127.0)))
    np.testing.assert_allclose(out, [[[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]], atol=1e-4)


def test_channel_dropout_zeroes_one_chroma_channel_per_clip():
    clips = np.random.default_rng(1).normal(size=(64, 3, 4, 4, 3)).astype(np.float32) + 5.0
    dropped, channel = color.channel_dropout(jax.random.PRNGKey(0), clips)
    dropped, channel = np.asarray(dropped), np.asarray(channel)
    assert set(channel.tolist()) == {1, 2}  # a and b are both chosen over 64 clips; L never
    for i, c in enumerate(channel):
        np.testing.assert_array_equal(dropped[i, ..., c], 0.0)
        kept = [k for k in range(3) if k != c]
        np.testing.assert_allclose(dropped[i][..., kept], 1.5 * clips[i][..., kept], rtol=1e-6)
