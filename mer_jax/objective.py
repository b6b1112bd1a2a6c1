"""MER's self-supervised loss of a batch of clips, in named stages (docs/method.md,
'Reconstruction and losses').

A clip is `num_refs` reference frames followed by one target frame. The stages:
  1. `features`: channel-dropped normalised Lab frames (plus flow) through the `MER` network;
  2. `windows`: the window radius, and per-pixel radii of the target (`model.use_sampler`);
  3. `reconstruction`: the target's colours copied from the references' clean Lab colours
     (averaged to the feature stride) through local affinities of the (VEN-refined) target
     features to the reference features, and its per-pixel error against the clean target;
  4. `weight map`: the error weighted by the value map (`model.use_weight_map`), else a mean;
  5. `positive/negative term`: the joint softmax with memory-bank negatives
     (`model.use_pos_neg`), and the bank's update;
  6. `total`: reconstruction + encoder_recon_weight * the reconstruction with the encoder's own
     target features as query (`model.use_ven` only) + lambda_pn * positive/negative term, lambda_pn
     warmed up linearly from 0 over `loss.pn_warmup_steps`.
Each config section is a typed module built once (`loss_terms.py`, `sampler.Sampler`). `stages`
runs stages 1-4's inputs and returns them with the intermediates (`Stages`: sampler regions, value
map, weight map, windows), which `diagnostics` reads on its held-out probe instead of recomputing.
"""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mer_jax import color, correspondence, feature_maps, loss_terms, losses, memory_bank
from mer_jax import sampler as sampler_lib
from mer_jax.models import encoder as encoder_lib
from mer_jax.models import mer


class Intermediates(NamedTuple):
    """What the loss computed on the way (None where the module is switched off).

    Attributes:
      sampled: the sampler's output (radius [B, h, w], base_radius [B], regions [B, h, w]).
      value_map: [B, h, w] the value map P: the VEN's, or the one computed for the weight map
        (`Objective.motion_value_map`); None with neither.
      weight_map: [B, H, W] the weights on the target's pixels at this step's gamma.
    """

    sampled: sampler_lib.SamplerOutput | None
    value_map: jax.Array | None
    weight_map: jax.Array | None


class Stages(NamedTuple):
    """Stages 1, 2 and 4's inputs for a batch of clips (`Objective.stages`)."""

    out: mer.MEROutput  # features [B, N, h, w, D], query [B, h, w, D], value_map [B, h, w] or None
    batch_stats: Any  # the BatchNorm statistics after this batch (train mode), else the given ones
    ref_colours: jax.Array  # [B, N-1, h, w, 3] the references' clean colours at the feature stride
    windows: loss_terms.Windows
    intermediates: Intermediates


class LossOutput(NamedTuple):
    """Auxiliary outputs of `Objective.__call__` (the loss itself is returned beside it)."""

    batch_stats: Any
    memory_bank: memory_bank.MemoryBank | None
    parts: dict[str, jax.Array]  # scalar components of the loss, for logging
    intermediates: Intermediates


@dataclasses.dataclass(frozen=True)
class Objective:
    """The loss of a batch of clips, from typed config sections (`from_config`).

    Attributes:
      model: the `MER` network.
      lab_mean, lab_std: Lab normalisation (config.data).
      reconstruction: config.model.reconstruction.
      loss: config.loss.
      sampler: config.model.sampler, or None without the sampler.
      value_map: config.model.value_map for the weight map, or None for a plain mean.
      memory: config.memory, or None without the positive/negative term.
      total_steps: the run's length (the weight map's gamma ramps over it when
        loss.gamma_ramp_steps is None).
      remat: recompute the reconstructions' affinities in the backward pass instead of storing them.
    """

    model: mer.MER
    lab_mean: tuple[float, ...]
    lab_std: tuple[float, ...]
    reconstruction: loss_terms.Reconstruction
    loss: loss_terms.LossTerms
    sampler: sampler_lib.Sampler | None
    value_map: loss_terms.ValueMap | None
    memory: loss_terms.NegativeBank | None
    total_steps: int
    remat: bool = False

    def __post_init__(self):
        if self.memory is not None and self.reconstruction.ref_fusion != "joint":
            raise ValueError(
                "model.use_pos_neg=True needs model.reconstruction.ref_fusion='joint' "
                f"(the negatives join one softmax), got {self.reconstruction.ref_fusion!r}"
            )

    def windows(self, target_features: jax.Array) -> tuple[loss_terms.Windows, sampler_lib.SamplerOutput | None]:
        """Stage 2: the windows of target features [B, h, w, D], and the sampler's output (or None).

        Without the sampler the window is model.reconstruction.radius; with it, every pixel's
        radius is at most the sampler's upper limit on this grid (`sampler.radius_limits`), which
        bounds the window.
        """
        tile = self.reconstruction.tile
        if self.sampler is None:
            return loss_terms.Windows(self.reconstruction.radius, tile, None), None
        sampled = self.sampler(target_features)
        return loss_terms.Windows(self.sampler.window(*target_features.shape[1:3]), tile, sampled.radius), sampled

    def reference_colours(self, clean: jax.Array) -> jax.Array:
        """The references' clean colours at the feature stride: [B, N, H, W, 3] -> [B, N-1, h, w, 3]."""
        return feature_maps.average_pool(clean[:, :-1], encoder_lib.OUTPUT_STRIDE)

    def reconstruct(
        self, query: jax.Array, refs: jax.Array, ref_colours: jax.Array, windows: loss_terms.Windows
    ) -> jax.Array:
        """Stage 3: the target's colours [B, h, w, 3] copied from the references' colours
        [B, R, h, w, 3] through the affinities of query [B, h, w, D] to refs [B, R, h, w, D]."""
        return self.reconstruction(query, refs, ref_colours, windows, self.remat)

    def motion_value_map(self, out: mer.MEROutput) -> jax.Array:
        """The weight map's value map P [B, h, w]: the VEN's, or (without the VEN) computed from the
        encoder features with `value_map`."""
        if out.value_map is not None:
            return out.value_map
        return self.value_map(out.features[:, -1], out.features[:, :-1])

    def weights(self, value_map: jax.Array, size: tuple[int, int], step: jax.Array) -> jax.Array:
        """Stage 4's weight map [B, H, W] at `size`: max(W, gamma), W the value map [B, h, w]
        upsampled and min-max normalised per frame, gamma the ramp at `step`."""
        return losses.weight_map(value_map, size, self.loss.gamma(step, self.total_steps))

    def stages(
        self,
        variables: dict,
        clean: jax.Array,
        inputs: jax.Array,
        flow: jax.Array | None,
        step: jax.Array,
        dropkey_rng: jax.Array | None = None,
    ) -> Stages:
        """Stages 1, 2 and the weight map of stage 4.

        Args:
          variables: the network's {"params", "batch_stats"}.
          clean: [B, N, H, W, 3] the clean normalised Lab clips (their colours are reconstructed).
          inputs: [B, N, H, W, 3] what the network sees (channel-dropped in training).
          flow: [B, N, H, W, 2] (use_flow) or None.
          step: the training step (the weight map's gamma).
          dropkey_rng: the VEN's DropKey key: train mode (BatchNorm statistics updated); None:
            eval mode (running statistics, no DropKey).
        """
        if dropkey_rng is None:
            out, batch_stats = self.model.apply(variables, inputs, flow, train=False), variables["batch_stats"]
        else:
            out, updates = self.model.apply(
                variables, inputs, flow, train=True, mutable=["batch_stats"], rngs={"dropkey": dropkey_rng}
            )
            batch_stats = updates["batch_stats"]
        ref_colours = self.reference_colours(clean)
        if ref_colours.shape[2:4] != out.features.shape[2:4]:
            raise ValueError(f"features {out.features.shape} do not match the stride-4 colours {ref_colours.shape}")
        windows, sampled = self.windows(out.features[:, -1])
        value_map = weights = None
        if self.value_map is not None:
            value_map = self.motion_value_map(out)
            weights = self.weights(value_map, clean.shape[2:4], step)
        elif self.model.use_ven:
            value_map = out.value_map
        return Stages(out, batch_stats, ref_colours, windows, Intermediates(sampled, value_map, weights))

    def weighted_error(self, errors: jax.Array, weights: jax.Array | None) -> jax.Array:
        """Stage 4: the mean of errors [B, H, W, C], weighted per pixel by the weight map [B, H, W]
        (None: plain)."""
        if weights is None:
            return jnp.mean(errors)
        return losses.weighted_mean(errors, weights)

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
        variables = {"params": params, "batch_stats": batch_stats}
        stages = self.stages(variables, clean, inputs, batch.get("flow"), step, dropkey_rng)
        out, ref_colours, windows = stages.out, stages.ref_colours, stages.windows
        refs, weights = out.features[:, :-1], stages.intermediates.weight_map  # [B, R, h, w, D], [B, H, W]

        pos_neg = None
        if self.memory is not None:
            pos_neg = self.positive_negative(out, ref_colours, negatives_rng, batch["video_id"], bank, windows)
        # The positive part of the joint softmax is the plain reconstruction when both softmaxes
        # see the same logits: reuse it.
        same_softmax = (
            pos_neg is not None
            and not self.loss.pn_normalize
            and self.loss.pn_temperature == self.reconstruction.temperature
        )
        if same_softmax:
            prediction = pos_neg.positive
        else:
            prediction = self.reconstruct(out.query, refs, ref_colours, windows)
        errors = self.loss.error(prediction, clean[:, -1], dropped)
        recon_loss = self.weighted_error(errors, weights)
        # recon_error, the unweighted mean error, is comparable across switches and training time.
        parts = {
            "loss_recon": recon_loss,
            "loss_recon_encoder": jnp.zeros(()),
            "loss_pn": jnp.zeros(()),
            "recon_error": jnp.mean(errors),
        }
        total, new_bank = recon_loss, bank
        if self.model.use_ven and self.loss.encoder_recon_weight > 0:
            # Without the VEN the query is the encoder's own features: this term would repeat the first.
            encoder_prediction = self.reconstruct(out.features[:, -1], refs, ref_colours, windows)
            encoder_errors = self.loss.error(encoder_prediction, clean[:, -1], dropped)
            parts["loss_recon_encoder"] = self.weighted_error(encoder_errors, weights)
            total = total + self.loss.encoder_recon_weight * parts["loss_recon_encoder"]
        if pos_neg is not None:
            joint_error = jnp.mean(self.loss.error(pos_neg.joint, clean[:, -1], dropped))
            pn_loss = losses.positive_mass_loss(pos_neg.log_positive_mass) + self.loss.pn_recon_weight * joint_error
            total = total + self.loss.pn_weight(step) * pn_loss
            parts["loss_pn"] = pn_loss
            new_bank = memory_bank.enqueue(
                bank, enqueue_rng, refs[:, 0].reshape(refs.shape[0], -1, refs.shape[-1]),
                ref_colours[:, 0].reshape(refs.shape[0], -1, 3), batch["video_id"], self.memory.bank_pixels,
            )  # fmt: skip
        return total, LossOutput(stages.batch_stats, new_bank, parts, stages.intermediates)

    def positive_negative(
        self,
        out: mer.MEROutput,
        ref_colours: jax.Array,
        rng: jax.Array,
        video_id: jax.Array,
        bank: memory_bank.MemoryBank,
        windows: loss_terms.Windows,
    ) -> correspondence.PositiveNegative:
        """Stage 5: the reconstruction with `memory.num_negatives` bank negatives in the softmax, on
        L2-normalised features with `loss.pn_normalize`, at `loss.pn_temperature`, with the
        positives `loss.pn_positive` ('window' or 'best')."""
        negatives = self.memory.negatives(bank, rng, video_id)
        query, keys, negative_keys = out.query, out.features[:, :-1], negatives.keys
        if self.loss.pn_normalize:
            query, keys, negative_keys = (feature_maps.l2_normalize(x) for x in (query, keys, negative_keys))
        reconstruct = loss_terms.maybe_remat(correspondence.local_reconstruct_with_negatives, self.remat)
        return reconstruct(
            query, keys, ref_colours, negative_keys, negatives.values, negatives.valid,
            temperature=self.loss.pn_temperature, positive=self.loss.pn_positive, radius=windows.radius,
            tile=windows.tile, pixel_radius=windows.pixel_radius,
        )  # fmt: skip


def from_config(config: Any, model: mer.MER, total_steps: int) -> Objective:
    """The objective of a training config: each section built once as its typed module, switched
    by config.model.use_*."""
    return Objective(
        model=model,
        lab_mean=tuple(config.data.lab_mean),
        lab_std=tuple(config.data.lab_std),
        reconstruction=loss_terms.Reconstruction(**config.model.reconstruction),
        loss=loss_terms.LossTerms(**config.loss),
        sampler=sampler_lib.Sampler(**config.model.sampler) if config.model.use_sampler else None,
        value_map=loss_terms.ValueMap(**config.model.value_map) if config.model.use_weight_map else None,
        memory=loss_terms.NegativeBank(**config.memory) if config.model.use_pos_neg else None,
        total_steps=total_steps,
        remat=config.remat,
    )
