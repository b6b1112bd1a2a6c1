"""MER's self-supervised loss of a batch of clips, in named stages (docs/method.md,
'Reconstruction and losses').

A clip is `num_refs` reference frames followed by one target frame. The stages:
  1. `features`: channel-dropped normalised Lab frames (plus flow) through the `MER` network;
  2. `sampler radii`: per-pixel window radii of the target (`model.use_sampler`), else None;
  3. `reconstruction`: the target's colours copied from the references' clean Lab colours
     (averaged to the feature stride) through local affinities of the (VEN-refined) target
     features to the reference features, and its per-pixel error against the clean target;
  4. `weight map`: the error weighted by the value map (`model.use_weight_map`), else a mean;
  5. `positive/negative term`: the joint softmax with memory-bank negatives
     (`model.use_pos_neg`), and the bank's update;
  6. `total`: reconstruction + encoder_recon_weight * the reconstruction with the encoder's own
     target features as query (`model.use_ven` only) + lambda_pn * positive/negative term, lambda_pn
     warmed up linearly from 0 over `loss.pn_warmup_steps`.
The stages are methods, which `diagnostics` also runs on its held-out probe.
"""

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mer_jax import color, correspondence, feature_maps, losses, memory_bank, sampler
from mer_jax.models import encoder as encoder_lib
from mer_jax.models import mer
from mer_jax.models import ven as ven_lib


class Features(NamedTuple):
    """Stage 1: what the network computed for a batch of clips."""

    out: mer.MEROutput  # features [B, N, h, w, D], query [B, h, w, D], value_map [B, h, w] or None
    batch_stats: Any  # the BatchNorm statistics after this batch


class LossOutput(NamedTuple):
    """Auxiliary outputs of `Objective.__call__` (the loss itself is returned beside it)."""

    batch_stats: Any
    memory_bank: memory_bank.MemoryBank | None
    parts: dict[str, jax.Array]  # scalar components of the loss, for logging


def _maybe_remat(function: Callable, remat: bool) -> Callable:
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
class Objective:
    """The loss of a batch of clips; every dict is a config section passed through unchanged.

    Attributes:
      model: the `MER` network.
      lab_mean, lab_std: Lab normalisation (config.data).
      reconstruction: config.model.reconstruction (radius, temperature, tile, ref_fusion).
      loss: config.loss (loss_scale, loss_channels, gamma_ramp_steps, encoder_recon_weight,
        lambda_pn, pn_warmup_steps, pn_positive, pn_recon_weight, pn_normalize, pn_temperature).
      sampler: config.model.sampler (`sampler.pixel_radii` arguments), or None without the sampler.
      value_map: config.model.value_map (window, beta) for the weight map, or None for a plain mean.
      memory: config.memory (bank_frames, bank_pixels, num_negatives), or None without the
        positive/negative term.
      total_steps: the run's length (the weight map's gamma ramps over it when
        loss.gamma_ramp_steps is None).
      remat: recompute the reconstructions' affinities in the backward pass instead of storing them.
    """

    model: mer.MER
    lab_mean: tuple[float, ...]
    lab_std: tuple[float, ...]
    reconstruction: dict
    loss: dict
    sampler: dict | None
    value_map: dict | None
    memory: dict | None
    total_steps: int
    remat: bool = False

    def __post_init__(self):
        if self.memory is not None and self.reconstruction["ref_fusion"] != "joint":
            raise ValueError(
                "model.use_pos_neg=True needs model.reconstruction.ref_fusion='joint' "
                f"(the negatives join one softmax), got {self.reconstruction['ref_fusion']!r}"
            )

    def features(self, variables: dict, inputs: jax.Array, flow: jax.Array | None, dropkey_rng: jax.Array) -> Features:
        """Stage 1: the network on normalised Lab clips [B, N, H, W, 3] (channel-dropped in
        training) with their flow [B, N, H, W, 2] (use_flow) or None, in training mode."""
        out, updates = self.model.apply(
            variables, inputs, flow, train=True, mutable=["batch_stats"], rngs={"dropkey": dropkey_rng}
        )
        return Features(out, updates["batch_stats"])

    def sampler_radii(self, target_features: jax.Array) -> tuple[int, jax.Array | None]:
        """Stage 2: (window radius, per-pixel radii [B, h, w] int32 or None for the fixed window).

        Without the sampler the window is model.reconstruction.radius; with it, every pixel's
        radius is at most the sampler's upper limit on this grid (`sampler.radius_limits`), which
        bounds the window.
        """
        if self.sampler is None:
            return self.reconstruction["radius"], None
        limits = [self.sampler[key] for key in ("radius_min", "radius_max", "grid_reference")]
        _, window = sampler.radius_limits(*limits, *target_features.shape[1:3])
        return window, sampler.pixel_radii(target_features, **self.sampler).radius

    def reference_colours(self, clean: jax.Array) -> jax.Array:
        """The references' clean colours at the feature stride: [B, N, H, W, 3] -> [B, N-1, h, w, 3]."""
        return feature_maps.average_pool(clean[:, :-1], encoder_lib.OUTPUT_STRIDE)

    def reconstruction_error(self, prediction: jax.Array, target: jax.Array, dropped: jax.Array) -> jax.Array:
        """Per-pixel error [B, H, W, C] of a reconstruction [B, h, w, 3] against the clean target
        [B, H, W, 3] (normalised Lab) on each clip's dropped channel [B] (or all channels)."""
        return losses.reconstruction_error(
            prediction, target, dropped, loss_scale=self.loss["loss_scale"], loss_channels=self.loss["loss_channels"]
        )

    def reconstruct(self, query: jax.Array, refs: jax.Array, ref_colours: jax.Array, local: dict) -> jax.Array:
        """Stage 3: the target's colours [B, h, w, 3] copied from the references' colours
        [B, R, h, w, 3] through the affinities of query [B, h, w, D] to refs [B, R, h, w, D], in
        the windows of `local` (radius, tile, pixel_radius: `sampler_radii`'s)."""
        reconstruct = _maybe_remat(correspondence.local_reconstruct, self.remat)
        return reconstruct(
            query, refs, ref_colours, temperature=self.reconstruction["temperature"],
            ref_fusion=self.reconstruction["ref_fusion"], **local,
        )  # fmt: skip

    def motion_value_map(self, out: mer.MEROutput) -> jax.Array:
        """The weight map's value map P [B, h, w]: the VEN's, or (without the VEN) computed from the
        encoder features with `value_map` (window, beta)."""
        if out.value_map is not None:
            return out.value_map
        return ven_lib.window_value_map(out.features[:, -1], out.features[:, :-1], **self.value_map)

    def weights(self, out: mer.MEROutput, size: tuple[int, int], step: jax.Array) -> jax.Array:
        """Stage 4's weight map [B, H, W] (needs `value_map`): max(W, gamma), W `motion_value_map`
        upsampled to `size` and min-max normalised per frame, gamma the ramp at `step`."""
        ramp = self.loss["gamma_ramp_steps"]
        gamma = losses.gamma_ramp(step, self.total_steps if ramp is None else ramp)
        return losses.weight_map(self.motion_value_map(out), size, gamma)

    def weighted_error(self, errors: jax.Array, out: mer.MEROutput, step: jax.Array) -> jax.Array:
        """Stage 4: the mean of errors [B, H, W, C], weighted per pixel by `weights` with the
        weight map, else plain."""
        if self.value_map is None:
            return jnp.mean(errors)
        return losses.weighted_mean(errors, self.weights(out, errors.shape[1:3], step))

    def __call__(
        self,
        params: Any,
        batch_stats: Any,
        batch: dict[str, jax.Array],
        rng: jax.Array,
        step: jax.Array,
        bank: memory_bank.MemoryBank | None,
    ) -> tuple[jax.Array, LossOutput]:
        """The loss of a batch.

        Args:
          params, batch_stats: the network's variables.
          batch: 'frames' uint8 RGB [B, N, H, W, 3] (frames[:, :-1] references, frames[:, -1] the
            target), 'video_id' int32 [B], and 'flow' float32 [B, N, H, W, 2] with use_flow.
          rng: PRNG key (channel dropout, DropKey, memory-bank draws).
          step: the training step (for the weight map's gamma ramp).
          bank: the memory bank of negatives (None without the positive/negative term).

        Returns:
          (scalar loss, LossOutput).
        """
        dropout_rng, dropkey_rng, enqueue_rng, negatives_rng = jax.random.split(rng, 4)
        clean = color.uint8_rgb_to_normalized_lab(batch["frames"], self.lab_mean, self.lab_std)
        inputs, dropped = color.channel_dropout(dropout_rng, clean)
        feats = self.features({"params": params, "batch_stats": batch_stats}, inputs, batch.get("flow"), dropkey_rng)
        refs = feats.out.features[:, :-1]  # [B, R, h, w, D]
        ref_colours = self.reference_colours(clean)
        if ref_colours.shape[2:4] != refs.shape[2:4]:
            raise ValueError(f"features {refs.shape} do not match the stride-4 colours {ref_colours.shape}")
        window, pixel_radius = self.sampler_radii(feats.out.features[:, -1])
        local = dict(radius=window, tile=self.reconstruction["tile"], pixel_radius=pixel_radius)

        pos_neg = None
        if self.memory is not None:
            pos_neg = self.positive_negative(feats.out, ref_colours, negatives_rng, batch["video_id"], bank, local)
        # The positive part of the joint softmax is the plain reconstruction when both softmaxes
        # see the same logits: reuse it.
        same_softmax = (
            pos_neg is not None
            and not self.loss["pn_normalize"]
            and self.loss["pn_temperature"] == self.reconstruction["temperature"]
        )
        if same_softmax:
            prediction = pos_neg.positive
        else:
            prediction = self.reconstruct(feats.out.query, refs, ref_colours, local)
        errors = self.reconstruction_error(prediction, clean[:, -1], dropped)
        recon_loss = self.weighted_error(errors, feats.out, step)
        # recon_error, the unweighted mean error, is comparable across switches and training time.
        parts = {
            "loss_recon": recon_loss,
            "loss_recon_encoder": jnp.zeros(()),
            "loss_pn": jnp.zeros(()),
            "recon_error": jnp.mean(errors),
        }
        total, new_bank = recon_loss, bank
        if self.model.use_ven and self.loss["encoder_recon_weight"] > 0:
            # Without the VEN the query is the encoder's own features: this term would repeat the first.
            encoder_prediction = self.reconstruct(feats.out.features[:, -1], refs, ref_colours, local)
            encoder_errors = self.reconstruction_error(encoder_prediction, clean[:, -1], dropped)
            parts["loss_recon_encoder"] = self.weighted_error(encoder_errors, feats.out, step)
            total = total + self.loss["encoder_recon_weight"] * parts["loss_recon_encoder"]
        if pos_neg is not None:
            joint_error = jnp.mean(self.reconstruction_error(pos_neg.joint, clean[:, -1], dropped))
            pn_loss = losses.positive_mass_loss(pos_neg.log_positive_mass) + self.loss["pn_recon_weight"] * joint_error
            lambda_pn = self.loss["lambda_pn"] * losses.warmup_factor(step, self.loss["pn_warmup_steps"])
            total = total + lambda_pn * pn_loss
            parts["loss_pn"] = pn_loss
            new_bank = memory_bank.enqueue(
                bank, enqueue_rng, refs[:, 0].reshape(refs.shape[0], -1, refs.shape[-1]),
                ref_colours[:, 0].reshape(refs.shape[0], -1, 3), batch["video_id"], self.memory["bank_pixels"],
            )  # fmt: skip
        return total, LossOutput(feats.batch_stats, new_bank, parts)

    def positive_negative(
        self,
        out: mer.MEROutput,
        ref_colours: jax.Array,
        rng: jax.Array,
        video_id: jax.Array,
        bank: memory_bank.MemoryBank,
        local: dict,
    ) -> correspondence.PositiveNegative:
        """Stage 5: the reconstruction with `memory.num_negatives` bank negatives in the softmax, on
        L2-normalised features with `loss.pn_normalize`, at `loss.pn_temperature`, with the
        positives `loss.pn_positive` ('window' or 'best')."""
        negatives = memory_bank.sample_negatives(bank, rng, video_id, self.memory["num_negatives"])
        query, keys, negative_keys = out.query, out.features[:, :-1], negatives.keys
        if self.loss["pn_normalize"]:
            query, keys, negative_keys = (feature_maps.l2_normalize(x) for x in (query, keys, negative_keys))
        reconstruct = _maybe_remat(correspondence.local_reconstruct_with_negatives, self.remat)
        return reconstruct(
            query, keys, ref_colours, negative_keys, negatives.values, negatives.valid,
            temperature=self.loss["pn_temperature"], positive=self.loss["pn_positive"], **local,
        )  # fmt: skip


def from_config(config: Any, model: mer.MER, total_steps: int) -> Objective:
    """The objective of a training config: its sections passed through, switched by config.model.use_*."""
    return Objective(
        model=model,
        lab_mean=tuple(config.data.lab_mean),
        lab_std=tuple(config.data.lab_std),
        reconstruction=dict(config.model.reconstruction),
        loss=dict(config.loss),
        sampler=dict(config.model.sampler) if config.model.use_sampler else None,
        value_map=dict(config.model.value_map) if config.model.use_weight_map else None,
        memory=dict(config.memory) if config.model.use_pos_neg else None,
        total_steps=total_steps,
        remat=config.remat,
    )
