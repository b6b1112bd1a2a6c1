"""MER's training forward pass: fuse flow, encode a clip, refine the target with the VEN, sample
per-pixel windows, reconstruct the target from its references, and compute the fused loss.

A clip is `num_refs` reference frames followed by one target frame. The encoder's inputs are the
channel-dropped normalised Lab frames (plus flow with `use_flow`); the reconstruction copies the
references' clean Lab colours (area-averaged to stride 4) through local affinities of target to
reference features; the loss compares it with the clean target. Every MER module is a switch.
"""

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mer_jax import color, correspondence, losses, memory_bank, sampler
from mer_jax.models import encoder as encoder_lib
from mer_jax.models import motion


class MEROutput(NamedTuple):
    features: jax.Array  # [B, N, h, w, D] encoder features of every frame
    query: jax.Array  # [B, h, w, D] target features used as queries (VEN-refined with use_ven)
    value_map: jax.Array | None  # [B, h, w] the VEN's potential value map P (None without VEN)


class MER(nn.Module):
    """Flow fusion (optional) + ResNet encoder + Value Extraction Network (optional).

    Attributes:
      encoder: `Encoder` keyword arguments.
      use_flow: fuse flow into the frames (`motion.FlowFusion`, keyword arguments `flow`).
      use_ven: refine the target features (`motion.ValueExtractionNetwork`, arguments `ven`).
      dtype: computation dtype of the encoder and VEN (float32, or bfloat16 on GPU/TPU). Flow
        fusion, the returned features and everything computed from them (affinities, softmaxes,
        losses) stay float32, as do parameters and BatchNorm statistics.
      remat: rematerialise the encoder's residual blocks in the backward pass.
    """

    encoder: dict
    use_flow: bool = False
    flow: dict | None = None
    use_ven: bool = False
    ven: dict | None = None
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(
        self, frames: jax.Array, flow: jax.Array | None = None, train: bool = False, refine: bool = True
    ) -> MEROutput:
        """frames [B, N, H, W, 3] normalised Lab (the last is the target), flow [B, N, H, W, 2] pixels.

        `refine=False` skips the VEN (single-frame embedding for label propagation).
        """
        b, n = frames.shape[:2]
        if self.use_flow:
            if flow is None:
                raise ValueError("this model fuses optical flow (use_flow=True): pass the frames' flow")
            frames = motion.FlowFusion(**self.flow, name="flow_fusion")(frames, flow)
        encoder = encoder_lib.Encoder(**self.encoder, dtype=self.dtype, remat=self.remat, name="encoder")
        features = encoder(frames.reshape(b * n, *frames.shape[2:]), train)
        features = features.reshape(b, n, *features.shape[1:])
        if self.use_ven and refine and n > 1:
            refined = motion.ValueExtractionNetwork(**self.ven, dtype=self.dtype, name="ven")(
                features[:, -1], features[:, :-1], train=train
            )
            return MEROutput(features, refined.features, refined.value_map)
        return MEROutput(features, features[:, -1], None)


class LossOutput(NamedTuple):
    """Auxiliary outputs of `clip_loss` (the loss itself is returned beside it)."""

    batch_stats: dict
    memory_bank: memory_bank.MemoryBank | None
    parts: dict[str, jax.Array]  # scalar components of the loss, for logging
    reconstruction: jax.Array  # [B, h, w, 3] normalised Lab at feature resolution


def area_downsample(x: jax.Array, factor: int) -> jax.Array:
    """Averages factor x factor blocks: [B, H, W, C] -> [B, ceil(H/f), ceil(W/f), C].

    Partial blocks at the border average the pixels they contain.
    """
    b, h, w, c = x.shape
    ph, pw = -h % factor, -w % factor
    padded = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    ones = jnp.pad(jnp.ones((1, h, w, 1), x.dtype), ((0, 0), (0, ph), (0, pw), (0, 0)))
    shape = (b, (h + ph) // factor, factor, (w + pw) // factor, factor, c)
    sums = padded.reshape(shape).sum(axis=(2, 4))
    counts = ones.reshape(1, *shape[1:5], 1).sum(axis=(2, 4))
    return sums / counts


def _l2_normalize(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _maybe_remat(remat: bool) -> tuple[Callable, Callable]:
    """`local_reconstruct` and `local_reconstruct_with_negatives`, rematerialised if `remat`.

    Their affinities are the largest stored activations of a step ([B, tiles, tile^2, 4096]
    logits and exponentials with negatives); recomputing them costs two einsums and a softmax.
    Static arguments (radius, tile, temperature, ref_fusion) stay Python values.
    """
    functions = (correspondence.local_reconstruct, correspondence.local_reconstruct_with_negatives)
    if not remat:
        return functions

    def checkpointed(function):
        def call(*arrays, pixel_radius=None, **static):
            return jax.checkpoint(lambda *a, r: function(*a, pixel_radius=r, **static))(*arrays, r=pixel_radius)

        return call

    return tuple(checkpointed(f) for f in functions)


def clip_loss(
    params: dict,
    batch_stats: dict,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    step: jax.Array,
    bank: memory_bank.MemoryBank | None,
    *,
    model: MER,
    lab_mean: tuple[float, ...],
    lab_std: tuple[float, ...],
    reconstruction: dict,
    loss: dict,
    sampler_args: dict | None,
    weight_map_window: tuple[int, float] | None,
    memory: dict | None,
    remat: bool = False,
) -> tuple[jax.Array, LossOutput]:
    """MER's self-supervised loss of a batch of clips.

    Args:
      params, batch_stats: the model's variables.
      batch: 'frames' uint8 RGB [B, N, H, W, 3] (frames[:, :-1] references, frames[:, -1] the
        target), 'video_id' int32 [B], and 'flow' float32 [B, N, H, W, 2] when the model fuses flow.
      rng: PRNG key (channel dropout, DropKey, memory-bank draws).
      step: the training step (for the weight map's gamma ramp).
      bank: the memory bank of negatives (None without the positive/negative loss).
      model: the `MER` module.
      lab_mean, lab_std: Lab normalisation.
      reconstruction: radius, temperature, tile, ref_fusion (see `correspondence.local_reconstruct`).
      loss: loss_scale, loss_channels, gamma_ramp_steps (> 0), lambda_pn, pn_recon_weight,
        pn_normalize, pn_temperature (the positive/negative softmax's features and temperature).
      sampler_args: `sampler.pixel_radii` keyword arguments, or None for a fixed radius.
      weight_map_window: (ven_window, ven_beta) for the weight map's value map, or None for a
        plain mean (the VEN's own value map is used when it runs).
      memory: bank_pixels, num_negatives for the positive/negative loss, or None.
      remat: recompute the reconstructions' affinities and softmaxes in the backward pass instead
        of storing them (with the model's own `remat`, the paper-size step stores about half).

    Returns:
      (scalar loss, LossOutput).
    """
    dropout_rng, dropkey_rng, enqueue_rng, negatives_rng = jax.random.split(rng, 4)
    clean = color.uint8_rgb_to_normalized_lab(batch["frames"], lab_mean, lab_std)  # [B, N, H, W, 3]
    inputs, dropped = color.channel_dropout(dropout_rng, clean)
    out, updates = model.apply(
        {"params": params, "batch_stats": batch_stats},
        inputs,
        batch.get("flow"),
        train=True,
        mutable=["batch_stats"],
        rngs={"dropkey": dropkey_rng},
    )
    b, n, height, width, _ = clean.shape
    refs = out.features[:, :-1]
    ref_colours = area_downsample(clean[:, :-1].reshape(b * (n - 1), height, width, 3), encoder_lib.OUTPUT_STRIDE)
    ref_colours = ref_colours.reshape(b, n - 1, *ref_colours.shape[1:])
    if ref_colours.shape[2:4] != refs.shape[2:4]:
        raise ValueError(f"features {refs.shape} do not match the stride-4 colours {ref_colours.shape}")
    window, pixel_radius = reconstruction["radius"], None
    if sampler_args is not None:
        pixel_radius = sampler.pixel_radii(out.features[:, -1], **sampler_args).radius
        window = sampler_args["radius_max"]
    local = dict(radius=window, tile=reconstruction["tile"], pixel_radius=pixel_radius)
    reconstruct, reconstruct_with_negatives = _maybe_remat(remat)
    if memory is not None:
        negatives = memory_bank.sample_negatives(bank, negatives_rng, batch["video_id"], memory["num_negatives"])
        query, keys, negative_keys = out.query, refs, negatives.keys
        if loss["pn_normalize"]:
            query, keys, negative_keys = (_l2_normalize(x) for x in (query, keys, negative_keys))
        pos_neg = reconstruct_with_negatives(
            query, keys, ref_colours, negative_keys, negatives.values, negatives.valid,
            temperature=loss["pn_temperature"], **local,
        )  # fmt: skip
    if memory is not None and not loss["pn_normalize"]:
        prediction = pos_neg.positive  # The same softmax as the plain reconstruction: reuse it.
    else:
        prediction = reconstruct(
            out.query, refs, ref_colours, temperature=reconstruction["temperature"],
            ref_fusion=reconstruction["ref_fusion"], **local,
        )  # fmt: skip
    error_args = dict(loss_scale=loss["loss_scale"], loss_channels=loss["loss_channels"])
    errors = losses.reconstruction_error(prediction, clean[:, -1], dropped, **error_args)
    if weight_map_window is not None:
        value_map = out.value_map
        if value_map is None:
            value_map = motion.window_value_map(out.features[:, -1], refs, *weight_map_window)
        gamma = losses.gamma_ramp(step, loss["gamma_ramp_steps"])
        recon_loss = losses.weighted_mean(errors, losses.weight_map(value_map, (height, width), gamma))
    else:
        recon_loss = jnp.mean(errors)
    # recon_error, the unweighted mean error, is comparable across switches and training time.
    parts = {"loss_recon": recon_loss, "loss_pn": jnp.zeros(()), "recon_error": jnp.mean(errors)}
    total, new_bank = recon_loss, bank
    if memory is not None:
        joint_errors = losses.reconstruction_error(pos_neg.joint, clean[:, -1], dropped, **error_args)
        pn_loss = losses.positive_mass_loss(pos_neg.log_positive_mass) + loss["pn_recon_weight"] * jnp.mean(
            joint_errors
        )
        total = total + loss["lambda_pn"] * pn_loss
        parts["loss_pn"] = pn_loss
        d = refs.shape[-1]
        new_bank = memory_bank.enqueue(
            bank, enqueue_rng, refs[:, 0].reshape(b, -1, d), ref_colours[:, 0].reshape(b, -1, 3),
            batch["video_id"], memory["bank_pixels"],
        )  # fmt: skip
    return total, LossOutput(updates["batch_stats"], new_bank, parts, prediction)
