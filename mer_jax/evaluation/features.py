"""Per-frame features for label propagation: the trained encoder or the raw-Lab baseline."""

from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from mer_jax import color, export
from mer_jax.data import flow as flow_lib
from mer_jax.models import mer

ENCODERS = ("trained", "lab")


class FrameEncoder(Protocol):
    """Maps uint8 RGB frames [T, H, W, 3] (and optionally their flow [T, H, W, 2]) to features
    [T, ceil(H/4), ceil(W/4), C] (a jax.Array)."""

    def __call__(self, frames: np.ndarray, flow: np.ndarray | None = None) -> jax.Array: ...


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
    """Normalised Lab pixels area-averaged to stride 4 (3 channels): the raw-colour baseline."""

    def __init__(self, lab_mean: tuple[float, ...], lab_std: tuple[float, ...]):
        self._embed = jax.jit(
            lambda frames: mer.area_downsample(color.uint8_rgb_to_normalized_lab(frames, lab_mean, lab_std), 4)
        )

    def __call__(self, frames: np.ndarray, flow: np.ndarray | None = None) -> jax.Array:
        return self._embed(frames)


def make_encoder(name: str, checkpoint: str, *, batch: int, lab_mean, lab_std) -> FrameEncoder:
    """'trained' (from an export or training workdir at `checkpoint`) or 'lab'."""
    if name == "lab":
        return LabEncoder(tuple(lab_mean), tuple(lab_std))
    if name == "trained":
        if not checkpoint:
            raise ValueError("encoder='trained' needs --config.checkpoint=DIR (a training workdir or an export)")
        return TrainedEncoder(export.load_for_inference(checkpoint), batch)
    raise ValueError(f"encoder must be one of {ENCODERS}, got {name!r}")
