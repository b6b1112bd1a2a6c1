"""Pictures of what each module does on the diagnostics probe, for TensorBoard (docs/method.md,
'Diagnostics').

`panel` lays out one row per probe clip, at the target frame's size: the target frame, its
ground-truth objects over it, the objects propagated from the references by the encoder's
affinities over it (each object in its DAVIS palette colour), the input flow (hue the
direction, brightness the speed), the value map P (min-max grey), the weight map (grey, 0 black
and 1 white) and the sampler's grown regions (black outside every region).
Maps of switched-off modules are left out. Host-side NumPy only: it runs on a few small clips
at log steps.
"""

import colorsys
import functools

import numpy as np

from mer_jax.evaluation import masks_io


def flow_to_rgb(flow: np.ndarray) -> np.ndarray:
    """Flow [H, W, 2] (dx, dy) -> uint8 RGB [H, W, 3]: hue the direction (0 degrees = +x, red;
    counter-clockwise in image coordinates with y down), value the speed over the frame's largest
    (black where still), full saturation."""
    dx, dy = flow[..., 0].astype(np.float64), flow[..., 1].astype(np.float64)
    speed = np.hypot(dx, dy)
    top = speed.max()
    value = speed / top if top > 0 else np.zeros_like(speed)
    hue = (np.arctan2(-dy, dx) / (2 * np.pi)) % 1.0
    rgb = np.vectorize(colorsys.hsv_to_rgb)(hue, np.ones_like(hue), value)
    return np.round(np.stack(rgb, axis=-1) * 255).astype(np.uint8)


def heat(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """A map [h, w] -> uint8 grey RGB [h, w, 3]: black at `low`, white at `high` (default the map's
    own minimum and maximum; all black when it is constant), clipped."""
    values = values.astype(np.float64)
    low = values.min() if low is None else low
    high = values.max() if high is None else high
    scaled = np.clip((values - low) / (high - low), 0, 1) if high > low else np.zeros_like(values)
    return np.repeat(np.round(scaled * 255).astype(np.uint8)[..., None], 3, axis=-1)


def regions_to_rgb(regions: np.ndarray) -> np.ndarray:
    """Region labels [h, w] (-1 outside every region) -> uint8 RGB: region k in DAVIS palette
    colour k + 1, black outside."""
    return masks_io.davis_palette()[np.clip(regions + 1, 0, 255)]


def overlay(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The frame [H, W, 3] uint8 with each object id of mask [H, W] blended in its palette colour
    at half opacity (background unchanged)."""
    colours = masks_io.davis_palette()[mask].astype(np.float32)
    blended = np.where(mask[..., None] > 0, 0.5 * frame + 0.5 * colours, frame)
    return np.round(blended).astype(np.uint8)


def _at(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An [h, w, 3] feature-grid image at [height, width, 3]: each cell repeated over the
    ceil(height / h) x ceil(width / w) pixels it covers, cropped to the frame."""
    rows, columns = -(-height // image.shape[0]), -(-width // image.shape[1])
    return image.repeat(rows, axis=0).repeat(columns, axis=1)[:height, :width]


def panel(
    frames: np.ndarray,
    masks: np.ndarray,
    flow: np.ndarray,
    propagated: np.ndarray,
    value_map: np.ndarray | None,
    weight_map: np.ndarray | None,
    regions: np.ndarray | None,
) -> np.ndarray:
    """The probe's picture: uint8 RGB [K * H, C * W, 3], row k clip k, columns as the module says.

    Args:
      frames: [K, H, W, 3] uint8 target frames.
      masks: [K, H, W] target object ids (uint8).
      flow: [K, H, W, 2] the target's input flow (the data's, whether or not the model reads it).
      propagated: [K, h, w] object ids propagated to the target's feature grid.
      value_map: [K, h, w] P, or None.
      weight_map: [K, H, W] the weights on the target's pixels, or None.
      regions: [K, h, w] the sampler's region labels, or None.
    """
    height, width = frames.shape[1:3]
    rows = []
    for k in range(frames.shape[0]):
        guessed = _at(propagated[k].astype(np.uint8)[..., None], height, width)[..., 0]
        tiles = [frames[k], overlay(frames[k], masks[k]), overlay(frames[k], guessed), flow_to_rgb(flow[k])]
        weights = functools.partial(heat, low=0.0, high=1.0)  # w = max(W, gamma) lies in [0, 1].
        for maps, draw in ((value_map, heat), (weight_map, weights), (regions, regions_to_rgb)):
            if maps is not None:
                tiles.append(_at(draw(maps[k]), height, width))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)
