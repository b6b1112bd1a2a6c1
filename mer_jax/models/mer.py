"""MER's training forward pass: encode a clip, reconstruct the target from its references.

A clip is `num_refs` reference frames followed by one target frame. The inputs to the encoder
are the channel-dropped normalised Lab frames; the reconstruction copies the references' clean
Lab colours (area-averaged to stride 4) through local affinities of target to reference
features; the loss compares it with the clean target.
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mer_jax import color, correspondence, losses
from mer_jax.models import encoder as encoder_lib


class MER(nn.Module):
    """Embeds frames [B, N, H, W, 3] into features [B, N, H/4, W/4, embed_dim]."""

    encoder: dict

    @nn.compact
    def __call__(self, frames: jax.Array, train: bool = False) -> jax.Array:
        b, n = frames.shape[:2]
        features = encoder_lib.Encoder(**self.encoder, name="encoder")(frames.reshape(b * n, *frames.shape[2:]), train)
        return features.reshape(b, n, *features.shape[1:])


class LossOutput(NamedTuple):
    """Auxiliary outputs of `clip_loss` (the loss itself is returned beside it)."""

    batch_stats: dict
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


def clip_loss(
    params: dict,
    batch_stats: dict,
    frames: jax.Array,
    rng: jax.Array,
    *,
    model: MER,
    lab_mean: tuple[float, ...],
    lab_std: tuple[float, ...],
    radius: int,
    temperature: float,
    tile: int,
    ref_fusion: str,
    loss_scale: float,
    loss_channels: str,
) -> tuple[jax.Array, LossOutput]:
    """Self-supervised reconstruction loss of a batch of clips.

    Args:
      params, batch_stats: the model's variables.
      frames: [B, N, H, W, 3] uint8 RGB clips; frames[:, :-1] are references, frames[:, -1]
        the target.
      rng: PRNG key for the channel dropout.
      model: the `MER` module.
      lab_mean, lab_std: Lab normalisation.
      radius, temperature, tile, ref_fusion: see `correspondence.local_reconstruct`.
      loss_scale, loss_channels: see `losses.reconstruction_loss`.

    Returns:
      (scalar loss, LossOutput).
    """
    clean = color.uint8_rgb_to_normalized_lab(frames, lab_mean, lab_std)  # [B, N, H, W, 3]
    inputs, dropped = color.channel_dropout(rng, clean)
    features, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, inputs, train=True, mutable=["batch_stats"]
    )
    b, n, h, w, _ = clean.shape
    ref_colours = area_downsample(clean[:, :-1].reshape(b * (n - 1), h, w, 3), encoder_lib.OUTPUT_STRIDE)
    ref_colours = ref_colours.reshape(b, n - 1, *ref_colours.shape[1:])
    if ref_colours.shape[2:4] != features.shape[2:4]:
        raise ValueError(f"features {features.shape} do not match the stride-4 colours {ref_colours.shape}")
    reconstruction = correspondence.local_reconstruct(
        features[:, -1],
        features[:, :-1],
        ref_colours,
        radius=radius,
        temperature=temperature,
        tile=tile,
        ref_fusion=ref_fusion,
    )
    loss = losses.reconstruction_loss(
        reconstruction, clean[:, -1], dropped, loss_scale=loss_scale, loss_channels=loss_channels
    )
    return loss, LossOutput(batch_stats=updates["batch_stats"], reconstruction=reconstruction)
