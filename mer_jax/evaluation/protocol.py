"""The label-propagation protocol: every number of a preset, and each frame's reference frames.

A `Preset` holds one protocol (docs/method.md, 'Label propagation'; configs/propagation.py holds
the presets); `make_preset` builds it from config fields, with the raw-Lab baseline's
override; `reference_plan` lists the frames each frame propagates from. The kernel that uses
them is in `propagation.py`.
"""

import dataclasses
from typing import Any, Mapping

import cv2
import numpy as np

from mer_jax import correspondence
from mer_jax.models import encoder as encoder_lib

CONTEXTS = ("mer", "crw")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Every number of a propagation protocol.

    Attributes:
      context: 'mer' (long-term frames + short-term frames picked by image similarity) or 'crw'
        (first frame + the `crw_context` previous frames).
      radius: window radius in feature pixels.
      first_frame_window: True: the first frame (reference slot 0) is searched inside the window
        like the other references; False: every cell of the first frame is a candidate and the
        window applies only to the other references (CRW's protocol).
      window: 'square' (Chebyshev <= radius) or 'disk' (Euclidean < radius).
      temperature: softmax temperature of the affinities.
      topk: keep only the k largest affinities per pixel (None: all).
      normalize: L2-normalise the features before the dot product.
      long_term: absolute frame indices used as references once they precede t ('mer').
      short_term: how many short-term references ('mer').
      short_term_search: they are picked among t-1 .. t-short_term_search ('mer').
      short_term_blur: Gaussian sigma (feature-cell pixels) of the images compared by MSE ('mer').
      crw_context: previous frames used as references besides the first ('crw').
      compactness: apply the compactness prior.
      compactness_topk, compactness_sigma, compactness_min_prob: the prior multiplies each
        weight by a Gaussian (sigma in feature pixels) of its distance to the nearest of the
        `compactness_topk` best matches in the same reference, when the largest weight exceeds
        `compactness_min_prob`, then renormalises.
      foreground_scale: factor on the foreground channels of the output (not of the labels
        propagated further).
      tile: query tile side (memory/work trade-off only).
      stride: the encoder output stride (frame pixels per feature cell) that the radii, sigmas
        and blur are meant for; an encoder of another stride is refused (`check_stride`).
    """

    context: str = "crw"
    radius: int = 12
    first_frame_window: bool = True
    window: str = "square"
    temperature: float = 0.05
    topk: int | None = 10
    normalize: bool = True
    long_term: tuple[int, ...] = (0, 5, 10)
    short_term: int = 3
    short_term_search: int = 8
    short_term_blur: float = 2.0
    crw_context: int = 20
    compactness: bool = False
    compactness_topk: int = 2
    compactness_sigma: float = 1.0
    compactness_min_prob: float = 0.1
    foreground_scale: float = 1.0
    tile: int = 8
    stride: int = encoder_lib.OUTPUT_STRIDE

    def __post_init__(self):
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if self.window not in correspondence.WINDOWS:
            raise ValueError(f"window must be one of {correspondence.WINDOWS}, got {self.window!r}")
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"topk must be None (all affinities) or at least 1, got {self.topk}")
        if self.context == "mer" and self.long_term[:1] != (0,):
            # The kernel takes reference slot 0 as the first frame (`reference_plan`).
            raise ValueError(f"long_term must start with frame 0, got {self.long_term}")
        if self.compactness and not self.first_frame_window:
            raise ValueError("compactness needs first_frame_window=True (the prior works on windows)")
        if self.compactness and self.topk is not None and self.compactness_topk > self.topk:
            raise ValueError(
                f"compactness_topk ({self.compactness_topk}) must be at most topk ({self.topk}): the prior's best"
                " matches are taken among the top-k affinities"
            )

    @property
    def max_refs(self) -> int:
        if self.context == "crw":
            return 1 + self.crw_context
        return len(self.long_term) + self.short_term


def make_preset(fields: Mapping[str, Any], encoder: str, lab_temperature: float) -> Preset:
    """The protocol of one preset's config fields (`config.presets.<name>`) for an encoder.

    The 'lab' encoder always uses L2-normalised features at `lab_temperature`: an unnormalised
    dot product of Lab pixels is nearly uniform (docs/method.md, 'Label propagation').

    Args:
      fields: the Preset's fields (lists become tuples).
      encoder: 'trained' or 'lab'.
      lab_temperature: the lab encoder's softmax temperature.
    """
    values = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in fields.items()}
    if encoder == "lab":
        values.update(normalize=True, temperature=lab_temperature)
    return Preset(**values)


def check_stride(preset_name: str, preset: Preset, stride: int, presets: Mapping[str, Any]) -> None:
    """Refuses an encoder whose output stride is not the one the preset's numbers are meant for.

    Raises:
      ValueError: naming the presets of `presets` ({name: fields}) meant for `stride`.
    """
    if preset.stride == stride:
        return
    fitting = sorted(name for name, fields in presets.items() if fields["stride"] == stride)
    raise ValueError(
        f"preset {preset_name!r} is meant for encoders of output stride {preset.stride} (its radius of {preset.radius}"
        f" cells spans {preset.radius * preset.stride} pixels); this encoder's stride is {stride}. Use a preset for "
        f"stride {stride} ({', '.join(fitting) or 'none defined'}: configs/propagation.py), or set "
        f"--config.presets.<name>.stride={stride} with radii chosen for it"
    )


def reference_plan(frames: np.ndarray, preset: Preset) -> tuple[np.ndarray, np.ndarray]:
    """Reference frames of every frame.

    Args:
      frames: [T, H, W, 3] uint8 RGB (used by the 'mer' context's similarity ranking).
      preset: the propagation protocol.

    Returns:
      (indices [T, M] int32, valid [T, M] bool) with M = preset.max_refs; row t lists frames
      < t (row 0 is unused). Slot 0 of every row t >= 1 is frame 0, valid, in both contexts ('crw'
      lists frame 0 first; a 'mer' preset's `long_term` starts with 0, checked by `Preset`): the
      kernel's `first_frame_window` relies on it. Invalid slots point at frame 0 and are masked.
    """
    num_frames = frames.shape[0]
    indices = np.zeros((num_frames, preset.max_refs), np.int32)
    valid = np.zeros((num_frames, preset.max_refs), bool)
    blurred = _blurred_small(frames, preset.short_term_blur, preset.stride) if preset.context == "mer" else None
    for t in range(1, num_frames):
        if preset.context == "crw":
            refs = sorted({0, *range(max(0, t - preset.crw_context), t)})
        else:
            long_term = [i for i in preset.long_term if i < t]
            candidates = [
                t - k for k in range(1, preset.short_term_search + 1) if t - k >= 0 and t - k not in long_term
            ]
            mse = [np.mean((blurred[c] - blurred[t]) ** 2) for c in candidates]
            short = [candidates[i] for i in np.argsort(mse, kind="stable")[: preset.short_term]]
            refs = long_term + sorted(short)
        indices[t, : len(refs)] = refs
        valid[t, : len(refs)] = True
    return indices, valid


def _blurred_small(frames: np.ndarray, sigma: float, stride: int) -> np.ndarray:
    """Frames area-averaged to the feature stride and Gaussian-blurred: [T, H/stride, W/stride, 3] float32."""
    h, w = frames.shape[1:3]
    size = (max(w // stride, 1), max(h // stride, 1))
    small = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return np.stack([cv2.GaussianBlur(f.astype(np.float32), (0, 0), sigma) for f in small])
