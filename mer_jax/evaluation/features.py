"""Per-frame features for label propagation: the trained encoder or the raw-Lab baseline.

Both are `vos.FrameEncoder`s (docs/method.md, 'Label propagation'): uint8 RGB frames
[T, H, W, 3] -> features [T, ceil(H/s), ceil(W/s), C] at the encoder's output stride s (its
`stride`: 4 for ours, 4 or 8 for converted PyTorch encoders).
"""

import threading
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mer_jax import color, cpu_compiler, export, feature_maps
from mer_jax.data import flow as flow_lib
from mer_jax.evaluation import vos
from mer_jax.models import encoder as encoder_lib

ENCODERS = ("trained", "lab")


class TrainedEncoder:
    """The trained MER encoder, applied `batch` frames at a time (jitted: the encoder compiles once
    per frame size; the VEN refinement, which indexes the whole video's features, once per frame
    size and video length rounded up to `batch`).

    A model trained with flow fusion gets each frame's flow: the given one, else OpenCV DIS flow
    computed here (`flow.dis_flow`, with the training `flow_gap`). With `use_ven` it returns
    `vos.RefinedFeatures`: the encoder features as keys and, as queries, every frame's features
    refined by the VEN against its references as training drew them (`export.ven_references`:
    `data.num_refs` frames `min(data.frame_gaps)` apart before it, clamped at frame 0).
    """

    def __init__(self, model: export.ExportedModel, batch: int, use_ven: bool = False):
        if use_ven and not model.has_ven:
            raise ValueError("eval.use_ven=True needs a model trained with a VEN (model.use_ven=True)")
        self.model, self.batch, self.use_ven = model, batch, use_ven
        self.stride = model.output_stride
        self._placed: dict[jax.Device, dict] = {}  # The variables on each device used so far.
        self._lock = threading.Lock()
        self._embed = cpu_compiler.jit(
            lambda variables, frames, flow: export.embed(model._replace(variables=variables), frames, flow)
        )
        self._refine = cpu_compiler.jit(
            lambda variables, features, target, refs: export.ven_refine(
                model._replace(variables=variables), features[target], features[refs]
            )
        )

    def _variables(self) -> dict:
        """The model's variables on the device computations run on: JAX's default device (which
        `video_shards` sets for each device's worker), else the process's first device. Copied
        there once per device, so each device embeds with its own copy."""
        device = jax.config.jax_default_device
        if not isinstance(device, jax.Device):  # None, or a platform name
            device = jax.local_devices()[0]
        with self._lock:
            if device not in self._placed:
                self._placed[device] = jax.device_put(self.model.variables, device)
            return self._placed[device]

    def __call__(self, frames: np.ndarray, flow: np.ndarray | None = None) -> jax.Array | vos.RefinedFeatures:
        if not self.model.uses_flow:
            flow = None
        elif flow is None:
            flow = flow_lib.dis_flow(frames, self.model.config.data.flow_gap)
        variables = self._variables()
        num_frames = len(frames)
        # [T rounded up to a batch, h, w, C]
        features = in_batches(lambda *chunk: self._embed(variables, *chunk), self.batch, frames, flow)
        if not self.use_ven:
            return features[:num_frames]
        data = self.model.config.data
        references = export.ven_references(num_frames, data.num_refs, min(data.frame_gaps))
        queries = in_batches(
            lambda target, refs: self._refine(variables, features, target, refs),
            self.batch,
            np.arange(num_frames),
            references,
        )
        return vos.RefinedFeatures(features[:num_frames], queries[:num_frames])


def in_batches(fn: Callable[..., jax.Array], batch: int, *arrays: np.ndarray | None) -> jax.Array:
    """fn applied to `batch` rows of the arrays at a time, the results concatenated.

    The last batch is zero-padded to `batch` rows, so a jitted fn compiles once per row shape
    whatever the number of rows; the padded rows' results are kept (the output has the row count
    rounded up to a multiple of `batch`: slice it). Arrays that are None are passed as None.
    """
    num_rows = len(next(a for a in arrays if a is not None))
    padded = [None if a is None else _pad_rows(a, -(-num_rows // batch) * batch) for a in arrays]
    chunks = [fn(*(None if a is None else a[i : i + batch] for a in padded)) for i in range(0, num_rows, batch)]
    return jnp.concatenate(chunks)


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    return np.pad(x, [(0, rows - len(x))] + [(0, 0)] * (x.ndim - 1))


class LabEncoder:
    """Normalised Lab pixels area-averaged to `stride` (3 channels): the raw-colour baseline,
    `batch` frames at a time."""

    def __init__(
        self,
        lab_mean: Sequence[float],
        lab_std: Sequence[float],
        batch: int = 16,
        stride: int = encoder_lib.OUTPUT_STRIDE,
    ):
        lab_mean, lab_std = tuple(lab_mean), tuple(lab_std)
        self.batch, self.stride = batch, stride
        self._embed = jax.jit(
            lambda frames: feature_maps.average_pool(
                color.uint8_rgb_to_normalized_lab(frames, lab_mean, lab_std), stride
            )
        )

    def __call__(self, frames: np.ndarray, flow: np.ndarray | None = None) -> jax.Array:
        return in_batches(self._embed, self.batch, frames)[: len(frames)]


def make_encoder(
    encoder: str,
    checkpoint: str | None,
    *,
    feature_batch: int,
    lab_mean: Sequence[float],
    lab_std: Sequence[float],
    use_ven: bool = False,
) -> vos.FrameEncoder:
    """The evaluation config's encoder: 'trained' (an export or training workdir at `checkpoint`,
    applied `feature_batch` frames at a time, its queries VEN-refined with `use_ven`) or 'lab'
    (normalised with lab_mean, lab_std)."""
    if encoder == "lab":
        if use_ven:
            raise ValueError("eval.use_ven=True needs encoder='trained' (raw Lab has no VEN)")
        return LabEncoder(lab_mean, lab_std)
    if encoder == "trained":
        if checkpoint is None:
            raise ValueError("encoder='trained' needs --config.checkpoint=DIR (a training workdir or an export)")
        return TrainedEncoder(export.load_for_inference(checkpoint), feature_batch, use_ven)
    raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
