"""Per-frame features for label propagation: the trained encoder or the raw-Lab baseline.

Both are `vos.FrameEncoder`s (docs/method.md, 'Label propagation'): uint8 RGB frames
[T, H, W, 3] -> features [T, ceil(H/4), ceil(W/4), C] at the encoder's output stride.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mer_jax import color, export, feature_maps
from mer_jax.data import flow as flow_lib
from mer_jax.evaluation import vos
from mer_jax.models import encoder as encoder_lib

ENCODERS = ("trained", "lab")


class TrainedEncoder:
    """The trained MER encoder, applied `batch` frames at a time (jitted).

    A model trained with flow fusion gets each frame's flow: the given one, else OpenCV DIS flow
    computed here (`flow.dis_flow`, with the training `flow_gap`).
    """

    def __init__(self, model: export.ExportedModel, batch: int):
        self.model, self.batch = model, batch
        self._embed = jax.jit(lambda frames, flow: export.embed(model, frames, flow))

    def __call__(self, frames: np.ndarray, flow: np.ndarray | None = None) -> jax.Array:
        if not self.model.model.use_flow:
            flow = None
        elif flow is None:
            flow = flow_lib.dis_flow(frames, self.model.config.data.flow_gap)
        chunks = [
            self._embed(frames[i : i + self.batch], None if flow is None else flow[i : i + self.batch])
            for i in range(0, len(frames), self.batch)
        ]
        return jnp.concatenate(chunks)


class LabEncoder:
    """Normalised Lab pixels area-averaged to the encoder's stride (3 channels): the raw-colour baseline."""

    def __init__(self, lab_mean: Sequence[float], lab_std: Sequence[float]):
        lab_mean, lab_std = tuple(lab_mean), tuple(lab_std)
        self._embed = jax.jit(
            lambda frames: feature_maps.average_pool(
                color.uint8_rgb_to_normalized_lab(frames, lab_mean, lab_std), encoder_lib.OUTPUT_STRIDE
            )
        )

    def __call__(self, frames: np.ndarray, flow: np.ndarray | None = None) -> jax.Array:
        return self._embed(frames)


def make_encoder(
    encoder: str, checkpoint: str | None, *, feature_batch: int, lab_mean: Sequence[float], lab_std: Sequence[float]
) -> vos.FrameEncoder:
    """The evaluation config's encoder: 'trained' (an export or training workdir at `checkpoint`,
    applied `feature_batch` frames at a time) or 'lab' (normalised with lab_mean, lab_std)."""
    if encoder == "lab":
        return LabEncoder(lab_mean, lab_std)
    if encoder == "trained":
        if checkpoint is None:
            raise ValueError("encoder='trained' needs --config.checkpoint=DIR (a training workdir or an export)")
        return TrainedEncoder(export.load_for_inference(checkpoint), feature_batch)
    raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
