"""The MER network: flow fusion (optional), the ResNet encoder and the Value Extraction Network
(optional), composed. Flax modules only: the training objective lives in `mer_jax/objective.py`."""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mer_jax.models import encoder as encoder_lib
from mer_jax.models import flow_fusion
from mer_jax.models import ven as ven_lib


class MEROutput(NamedTuple):
    features: jax.Array  # [B, N, h, w, D] encoder features of every frame
    query: jax.Array  # [B, h, w, D] target features used as queries (VEN-refined with use_ven)
    value_map: jax.Array | None  # [B, h, w] the VEN's potential value map P (None without VEN)


class MER(nn.Module):
    """Flow fusion (optional) + ResNet encoder + Value Extraction Network (optional).

    Every dict attribute is a config section passed through unchanged as keyword arguments.

    Attributes:
      encoder: `encoder.Encoder` arguments (config.model.encoder).
      use_flow: fuse flow into the frames (`flow_fusion.FlowFusion`, arguments `flow`).
      flow: config.model.flow (encoding, alpha_init).
      use_ven: refine the target features (`ven.ValueExtractionNetwork`, arguments `ven`).
      ven: config.model.ven (num_heads, kv_pool, query_chunk, attention, radius, dropkey_rate, zero_init_out).
      value_map: config.model.value_map (window, beta, grid_reference) of the VEN's value map.
      lab_mean, lab_std: the frames' Lab normalisation (config.data), for the colour flow encoding.
      dtype: computation dtype of the encoder and VEN (float32, or bfloat16 on GPU/TPU). Flow
        fusion, the returned features and everything computed from them (affinities, softmaxes,
        losses) stay float32, as do parameters and BatchNorm statistics.
      remat: rematerialise the encoder's residual blocks in the backward pass.
    """

    encoder: dict
    use_flow: bool
    flow: dict
    use_ven: bool
    ven: dict
    value_map: dict
    lab_mean: tuple[float, ...]
    lab_std: tuple[float, ...]
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(
        self, frames: jax.Array, flow: jax.Array | None = None, train: bool = False, refine: bool = True
    ) -> MEROutput:
        """frames [B, N, H, W, 3] normalised Lab (the last is the target), flow [B, N, H, W, 2] pixels.

        `refine=False` skips the VEN (single-frame embedding for label propagation).
        """
        b, n, height, width = frames.shape[:4]
        inputs = frames  # [B, N, H, W, C], or flow fusion's ScaledInput of that shape
        if self.use_flow:
            if flow is None:
                raise ValueError("this model fuses optical flow (use_flow=True): pass the frames' flow")
            fusion = flow_fusion.FlowFusion(
                **self.flow, lab_mean=self.lab_mean, lab_std=self.lab_std, name="flow_fusion"
            )
            inputs = fusion(frames, flow)
        encoder = encoder_lib.Encoder(**self.encoder, dtype=self.dtype, remat=self.remat, name="encoder")
        features = encoder(inputs.reshape(b * n, height, width, -1), train)
        features = features.reshape(b, n, *features.shape[1:])
        if self.use_ven and refine and n > 1:
            refined = ven_lib.ValueExtractionNetwork(**self.ven, **self.value_map, dtype=self.dtype, name="ven")(
                features[:, -1], features[:, :-1], train=train
            )
            return MEROutput(features, refined.features, refined.value_map)
        return MEROutput(features, features[:, -1], None)
