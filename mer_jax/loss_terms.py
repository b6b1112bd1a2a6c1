"""The objective's config sections as typed, frozen modules, each built once from its section
(`Reconstruction(**config.model.reconstruction)`, `LossTerms(**config.loss)`,
`ValueMap(**config.model.value_map)`, `NegativeBank(**config.memory)`; the sampler's is
`sampler.Sampler`). Every field is required: a renamed or missing field fails where the objective
is built, not when the step is traced (docs/method.md, 'Reconstruction and losses')."""

import dataclasses
from typing import Callable, NamedTuple

import jax

from mer_jax import correspondence, losses, memory_bank
from mer_jax.models import ven as ven_lib


class Windows(NamedTuple):
    """Where each target pixel looks in the references.

    Attributes:
      radius: the window radius (static): the reconstruction's, or the sampler's upper limit.
      tile: query tile side (static).
      pixel_radius: [B, h, w] int32 per-pixel radii at most `radius` (the sampler's), or None.
    """

    radius: int
    tile: int
    pixel_radius: jax.Array | None


def maybe_remat(function: Callable, remat: bool) -> Callable:
    """`function` (a local reconstruction), rematerialised in the backward pass if `remat`.

    The reconstructions' affinities are the largest stored activations of a step ([B, tiles,
    tile^2, window] logits and exponentials); recomputing them costs two einsums and a softmax.
    Keyword arguments stay static Python values; `pixel_radius` is traced.
    """
    if not remat:
        return function

    def call(*arrays, pixel_radius=None, **static):
        return jax.checkpoint(lambda *a, r: function(*a, pixel_radius=r, **static))(*arrays, r=pixel_radius)

    return call


@dataclasses.dataclass(frozen=True)
class Reconstruction:
    """config.model.reconstruction: the target's colours copied from the references' through local
    affinities (`correspondence.local_reconstruct`).

    Attributes:
      radius: the window radius without the sampler (with it, the sampler's scaled radius_max).
      temperature: the affinities' softmax temperature.
      ref_fusion: 'joint' (one softmax over all references' windows) or per reference.
      tile: query tile side.
    """

    radius: int
    temperature: float
    ref_fusion: str
    tile: int

    def __call__(
        self, query: jax.Array, refs: jax.Array, ref_colours: jax.Array, windows: Windows, remat: bool
    ) -> jax.Array:
        """The target's colours [B, h, w, 3] from the references' colours [B, R, h, w, 3] through the
        affinities of query [B, h, w, D] to refs [B, R, h, w, D] in `windows`."""
        reconstruct = maybe_remat(correspondence.local_reconstruct, remat)
        return reconstruct(
            query, refs, ref_colours, temperature=self.temperature, ref_fusion=self.ref_fusion,
            radius=windows.radius, tile=windows.tile, pixel_radius=windows.pixel_radius,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class LossTerms:
    """config.loss: how the objective's terms are computed and weighted.

    Attributes:
      loss_scale, loss_channels: the reconstruction error (`losses.reconstruction_error`).
      gamma_ramp_steps: the weight map's gamma ramp (None: the whole run).
      encoder_recon_weight: weight of the reconstruction with the encoder's own target features
        as query (use_ven only).
      lambda_pn, pn_warmup_steps: the positive/negative term's weight, warmed up linearly from 0.
      pn_positive: the joint softmax's positives, 'window' or 'best'.
      pn_recon_weight: weight of the joint reconstruction's error inside the term.
      pn_normalize, pn_temperature: L2-normalised features, and the joint softmax's temperature.
    """

    loss_scale: float
    loss_channels: str
    gamma_ramp_steps: int | None
    encoder_recon_weight: float
    lambda_pn: float
    pn_warmup_steps: int
    pn_positive: str
    pn_recon_weight: float
    pn_normalize: bool
    pn_temperature: float

    def error(self, prediction: jax.Array, target: jax.Array, dropped: jax.Array, channels: str | None = None):
        """Per-pixel error [B, H, W, C] of a reconstruction [B, h, w, 3] against the clean target
        [B, H, W, 3] on each clip's dropped channel [B] (or on `channels`, default loss_channels)."""
        return losses.reconstruction_error(
            prediction, target, dropped, loss_scale=self.loss_scale, loss_channels=channels or self.loss_channels
        )

    def gamma(self, step: jax.Array, total_steps: int) -> jax.Array:
        """The weight map's gamma at `step` (ramped over gamma_ramp_steps, or the whole run)."""
        return losses.gamma_ramp(step, total_steps if self.gamma_ramp_steps is None else self.gamma_ramp_steps)

    def pn_weight(self, step: jax.Array) -> jax.Array:
        """lambda_pn at `step`, after the warm-up."""
        return self.lambda_pn * losses.warmup_factor(step, self.pn_warmup_steps)


@dataclasses.dataclass(frozen=True)
class ValueMap:
    """config.model.value_map: the potential value map computed from encoder features without the VEN
    (`ven.window_value_map`; the VEN's own is built from the same section).

    Attributes:
      window: window side, for a grid_reference-sided feature grid (`ven.scaled_window`).
      beta: weight of the same-place similarity.
      grid_reference: the grid side `window` is meant for, or 0 for a window in feature pixels.
    """

    window: int
    beta: float
    grid_reference: int

    def __call__(self, target: jax.Array, refs: jax.Array) -> jax.Array:
        """P [B, h, w] of target features [B, h, w, D] against reference features [B, R, h, w, D]."""
        return ven_lib.window_value_map(target, refs, self.window, self.beta, self.grid_reference)


@dataclasses.dataclass(frozen=True)
class NegativeBank:
    """config.memory: the memory bank of negatives of the positive/negative term.

    Attributes:
      bank_frames, bank_pixels: frames held and pixels kept per frame (`memory_bank.create`).
      num_negatives: negatives drawn per step.
    """

    bank_frames: int
    bank_pixels: int
    num_negatives: int

    def negatives(self, bank: memory_bank.MemoryBank, rng: jax.Array, video_id: jax.Array) -> memory_bank.Negatives:
        """`num_negatives` draws from the bank, none from a clip's own video (`video_id` [B])."""
        return memory_bank.sample_negatives(bank, rng, video_id, self.num_negatives)
