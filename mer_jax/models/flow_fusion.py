"""Flow fusion (docs/method.md, 'Flow fusion'): optical flow superimposed on the input frames.

`FlowFusion` either adds the encoded flow to the frames' three channels, O = I + alpha * G(F), G
the Middlebury colour-wheel flow image in normalised Lab (`flow_to_color`, the paper's) or a
learnable 1x1 conv of the flow divided by the image size, or appends it as two channels of its
own at a fixed scale, O = [I, alpha * F / (scale * size)] ('channels', the default). It returns O
as an `encoder.ScaledInput` (base + alpha * offset), so that the encoder computes alpha's gradient
without the stem's input gradient.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mer_jax import color
from mer_jax.models import encoder as encoder_lib

FLOW_ENCODINGS = ("channels", "color", "conv")
_FLOW_EPS = 1e-5
_OUT_OF_RANGE_SCALE = 0.75  # Middlebury darkens flow beyond the maximum radius.
# Colour-wheel segments of Baker et al. (2011): (number of hues, start RGB, end RGB).
_WHEEL_SEGMENTS = (
    (15, (1.0, 0.0, 0.0), (1.0, 1.0, 0.0)),  # red -> yellow
    (6, (1.0, 1.0, 0.0), (0.0, 1.0, 0.0)),  # yellow -> green
    (4, (0.0, 1.0, 0.0), (0.0, 1.0, 1.0)),  # green -> cyan
    (11, (0.0, 1.0, 1.0), (0.0, 0.0, 1.0)),  # cyan -> blue
    (13, (0.0, 0.0, 1.0), (1.0, 0.0, 1.0)),  # blue -> magenta
    (6, (1.0, 0.0, 1.0), (1.0, 0.0, 0.0)),  # magenta -> red
)


def _color_wheel() -> np.ndarray:
    """[55, 3] float32 RGB hues in [0, 1]; entry k sits at angle 2 pi k / 55."""
    parts = []
    for count, start, end in _WHEEL_SEGMENTS:
        steps = np.arange(count, dtype=np.float64)[:, None] / count
        parts.append(np.asarray(start) + (np.asarray(end) - np.asarray(start)) * steps)
    return np.concatenate(parts).astype(np.float32)


_COLOR_WHEEL = _color_wheel()


def flow_to_color(flow: jax.Array, max_radius: float | None = None) -> jax.Array:
    """Middlebury colour-wheel image of optical flow (Baker et al., 2011).

    Hue follows the flow angle atan2(dy, dx) in image coordinates (y down): +x is red, +y orange,
    -x light blue, -y violet. The 55 wheel hues are spread evenly over the full circle and
    interpolated linearly with wrap-around (the reference code spreads them over 54 intervals, so
    hues differ from it by less than one wheel step). Saturation is the magnitude divided by
    `max_radius`: zero flow is white, flow at `max_radius` is the pure hue, and flow beyond it is
    the pure hue darkened by 0.75.

    Args:
      flow: [..., H, W, 2] flow (dx, dy) in pixels.
      max_radius: magnitude that maps to full saturation; None uses each image's own maximum
        magnitude + 1e-5, so every image spans the full saturation range.

    Returns:
      [..., H, W, 3] float32 RGB in [0, 1].
    """
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be [..., H, W, 2], got shape {flow.shape}")
    if max_radius is not None and max_radius <= 0:
        raise ValueError(f"max_radius must be positive, got {max_radius}")
    flow = jnp.asarray(flow, jnp.float32)
    dx, dy = flow[..., 0], flow[..., 1]
    magnitude = jnp.sqrt(dx**2 + dy**2)
    if max_radius is None:
        max_radius = jnp.max(magnitude, axis=(-2, -1), keepdims=True) + _FLOW_EPS
    radius = (magnitude / max_radius)[..., None]
    num_hues = _COLOR_WHEEL.shape[0]
    position = (jnp.arctan2(dy, dx) / (2.0 * jnp.pi)) % 1.0 * num_hues
    lower = jnp.floor(position)
    frac = (position - lower)[..., None]
    # `% 1.0` can round up to exactly 1.0 for tiny negative angles, hence the modulo on the index.
    index = lower.astype(jnp.int32) % num_hues
    wheel = jnp.asarray(_COLOR_WHEEL)
    hue = (1.0 - frac) * wheel[index] + frac * wheel[(index + 1) % num_hues]
    return jnp.where(radius <= 1.0, 1.0 - radius * (1.0 - hue), _OUT_OF_RANGE_SCALE * hue)


class FlowFusion(nn.Module):
    """Fuses flow into the frames, with alpha a learnable scalar param 'alpha'.

    Attributes:
      encoding: 'channels' (O = [I, alpha * (dx / W, dy / H) / scale]: two more input channels,
        so flow never mixes with a colour channel, keeps the same scale in every image and
        direction, and a channel zeroed by channel dropout stays zero), 'color' (O = I + alpha *
        the colour-wheel flow image converted to normalised Lab like a frame; its saturation is
        normalised per image) or 'conv' (O = I + alpha * a learnable bias-free 1x1 conv 2 -> 3,
        param 'flow_conv', of (dx / W, dy / H)).
      lab_mean: Lab normalisation mean of the frames, e.g. (50, 0, 0).
      lab_std: Lab normalisation std of the frames, e.g. (50, 127, 127).
      alpha_init: initial value of alpha.
      scale: with 'channels', the motion (a fraction of the image side per flow gap) that encodes
        as 1.
    """

    encoding: str
    lab_mean: tuple[float, ...]
    lab_std: tuple[float, ...]
    alpha_init: float = 0.1
    scale: float = 0.02

    @nn.compact
    def __call__(self, frames: jax.Array, flow: jax.Array) -> encoder_lib.ScaledInput:
        """Fuses the encoded flow into the frames.

        Args:
          frames: [B, H, W, 3] normalised Lab frames (any leading dims).
          flow: [B, H, W, 2] flow (dx, dy) in pixels, same leading dims as `frames`.

        Returns:
          O = base + alpha * offset (`combined()`): [B, H, W, 5] frames and flow channels
          ('channels': base the frames and two zero channels, offset three zero channels and the
          relative flow / scale), else [B, H, W, 3] fused frames (base the frames, offset the
          encoded flow).
        """
        if self.encoding not in FLOW_ENCODINGS:
            raise ValueError(f"encoding must be one of {FLOW_ENCODINGS}, got {self.encoding!r}")
        if frames.ndim < 3 or frames.shape[-1] != 3 or flow.shape != (*frames.shape[:-1], 2):
            raise ValueError(f"need frames [..., H, W, 3] and flow [..., H, W, 2], got {frames.shape} and {flow.shape}")
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        alpha = self.param("alpha", nn.initializers.constant(self.alpha_init), (), jnp.float32)
        height, width = frames.shape[-3:-1]
        relative = flow / jnp.asarray([width, height], flow.dtype)  # Fractions of the image side.
        if self.encoding == "channels":
            zeros = jnp.zeros_like(frames[..., :2])
            offset = (relative / self.scale).astype(frames.dtype)
            return encoder_lib.ScaledInput(
                jnp.concatenate([frames, zeros], axis=-1),
                jnp.concatenate([jnp.zeros_like(frames), offset], axis=-1),
                alpha,
            )
        if self.encoding == "color":
            encoded = color.normalize_lab(color.rgb_to_lab(flow_to_color(flow)), self.lab_mean, self.lab_std)
        else:
            # A 1x1 conv is a Dense layer on the channel axis.
            encoded = nn.Dense(3, use_bias=False, name="flow_conv")(relative)
        return encoder_lib.ScaledInput(frames, encoded.astype(frames.dtype), alpha)
