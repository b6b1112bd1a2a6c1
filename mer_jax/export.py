"""Export trained weights for inference: `python -m mer_jax.export --workdir=DIR --output=DIR2`.

Writes the model's variables (parameters and BatchNorm statistics, no optimizer state) of the
latest checkpoint in DIR as an Orbax tree to `DIR2/variables`, and the training config to
`DIR2/config.json`. `load_exported(DIR2)` reads them back, `embed` computes features and, for
models trained with a VEN, `ven_refine` refines a frame's features against reference frames'
and `ven_references` names those frames as training drew them. Exports of published PyTorch
encoders (`mer_jax.convert`) load the same way; their `CONVERTED` record says how to feed them.
"""

import json
import os
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from absl import app, flags

from mer_jax import checkpointing, color, train_state
from mer_jax.models import encoder as encoder_lib
from mer_jax.models import mer, torch_resnet
from mer_jax.models import ven as ven_lib

VARIABLES_DIR = "variables"
# In an export of a converted PyTorch encoder (`mer_jax.convert`): {"arch", "architecture"
# ('torch_resnet' or 'mer'), "resnet" (TorchResNet fields), "input" {"colour", "mean", "std"},
# "output_stride", "source", "loaded", "skipped"}.
CONVERTED = "converted.json"


class ExportedModel(NamedTuple):
    """A trained model ready for inference: our `mer.MER`, or a converted `TorchResNet` (with
    `converted`, the export's CONVERTED record)."""

    model: mer.MER | torch_resnet.TorchResNet
    variables: dict  # {'params': ..., 'batch_stats': ...}
    config: ml_collections.ConfigDict
    converted: dict | None = None

    @property
    def uses_flow(self) -> bool:
        """Whether `embed` needs each frame's flow."""
        return isinstance(self.model, mer.MER) and self.model.use_flow

    @property
    def has_ven(self) -> bool:
        """Whether the model can refine queries (`ven_refine`)."""
        return isinstance(self.model, mer.MER) and self.model.use_ven

    @property
    def output_stride(self) -> int:
        """Frame pixels per feature cell."""
        return encoder_lib.OUTPUT_STRIDE if self.converted is None else self.converted["output_stride"]


def restore_variables(workdir: str) -> tuple[dict, ml_collections.ConfigDict, int]:
    """The model variables of the latest checkpoint of a training workdir.

    Returns:
      ({'params': ..., 'batch_stats': ...}, the run's config, the checkpoint's step).

    Raises:
      FileNotFoundError: `workdir` has no config.json or no checkpoint.
    """
    config = checkpointing.load_config(workdir)
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints)
    step = checkpointer.latest_step()
    if step is None:
        checkpointer.close()
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints: train first")
    _, init_fn, _ = train_state.make_initializer(config, total_steps=1)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # This process's (multi-process runs)
    state = checkpointer.restore_or_init(init_fn, checkpointing.with_sharding(jax.eval_shape(init_fn), device))
    checkpointer.close()
    return {"params": state.params, "batch_stats": state.batch_stats}, config, step


def export(workdir: str, output: str) -> int:
    """Writes the latest checkpoint's model variables and the config of `workdir` to `output`.

    Returns:
      The exported checkpoint's step.

    Raises:
      FileNotFoundError: `workdir` has no config or checkpoint; FileExistsError: `output` exists.
    """
    workdir, output = os.path.abspath(os.path.expanduser(workdir)), os.path.abspath(os.path.expanduser(output))
    if os.path.exists(os.path.join(output, VARIABLES_DIR)):
        raise FileExistsError(f"{output}/{VARIABLES_DIR} already exists; choose a new --output")
    variables, config, step = restore_variables(workdir)
    checkpointing.save_tree(os.path.join(output, VARIABLES_DIR), variables)
    checkpointing.save_config(output, config)
    return step


def load_exported(path: str) -> ExportedModel:
    """Reads an export written by `export` (or `python -m mer_jax.export`, or `mer_jax.convert`)."""
    config = checkpointing.load_config(path)
    variables = checkpointing.load_tree(os.path.join(os.path.abspath(path), VARIABLES_DIR))
    converted_path = os.path.join(path, CONVERTED)
    if not os.path.isfile(converted_path):
        return ExportedModel(train_state.build_model(config), variables, config)
    with open(converted_path) as f:
        converted = json.load(f)
    if converted["architecture"] == "torch_resnet":
        model = torch_resnet.TorchResNet(**converted["resnet"])
    else:
        model = train_state.build_model(config)
    return ExportedModel(model, variables, config, converted)


def load_for_inference(path: str) -> ExportedModel:
    """An export directory, or the latest checkpoint of a training workdir, ready for `embed`."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(os.path.join(path, VARIABLES_DIR)):
        return load_exported(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        variables, config, _ = restore_variables(path)
        return ExportedModel(train_state.build_model(config), variables, config)
    raise FileNotFoundError(
        f"{path} is neither an export (no {VARIABLES_DIR}/) nor a training workdir (no checkpoints/); "
        "pass --config.checkpoint=DIR of `python -m mer_jax.train` or `python -m mer_jax.export`"
    )


def embed(exported: ExportedModel, frames: jax.Array, flow: jax.Array | None = None) -> jax.Array:
    """Features of uint8 RGB frames [B, H, W, 3] -> [B, ceil(H/s), ceil(W/s), C] at the model's
    output stride s (4 for ours).

    Models trained with `use_flow` need each frame's flow [B, H, W, 2] (pixels, to the frame
    `flow_gap` earlier, e.g. from `mer_jax.data.flow.dis_flow`). A converted TorchResNet gets the
    frames in the colour space and normalisation its project trained with.
    """
    if isinstance(exported.model, torch_resnet.TorchResNet):
        inputs = torch_resnet.normalize_input(frames, **exported.converted["input"])
        return exported.model.apply(exported.variables, inputs)
    config = exported.config
    lab = color.uint8_rgb_to_normalized_lab(frames, tuple(config.data.lab_mean), tuple(config.data.lab_std))
    flow = None if flow is None else flow[:, None]
    return exported.model.apply(exported.variables, lab[:, None], flow, train=False, refine=False).features[:, 0]


def ven_refine(exported: ExportedModel, target: jax.Array, refs: jax.Array) -> jax.Array:
    """The VEN-refined query features of targets [B, h, w, C] against references [B, R, h, w, C]
    (encoder features from `embed`), in evaluation mode (no DropKey): [B, h, w, C].

    Raises:
      ValueError: the model was trained without a VEN (model.use_ven False).
    """
    model = exported.model
    if not exported.has_ven:
        raise ValueError("this model has no VEN (trained with model.use_ven=False): evaluate with eval.use_ven=False")
    ven = ven_lib.ValueExtractionNetwork(**model.ven, **model.value_map, dtype=model.dtype)
    return ven.apply({"params": exported.variables["params"]["ven"]}, target, refs, train=False).features


def ven_references(num_frames: int, num_refs: int, gap: int) -> np.ndarray:
    """The VEN's reference frames of every frame as in training (`num_refs` frames `gap` apart
    before the target, the nearest `gap` before it; indices below 0 clamp to frame 0):
    [num_frames, num_refs] int32, oldest first; row t is [t - num_refs*gap, ..., t - gap]."""
    offsets = gap * np.arange(num_refs, 0, -1)
    return np.maximum(np.arange(num_frames)[:, None] - offsets[None, :], 0).astype(np.int32)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    step = export(flags.FLAGS.workdir, flags.FLAGS.output)
    print(f"Exported step {step} of {flags.FLAGS.workdir} to {flags.FLAGS.output}")


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and checkpoints/).")
    flags.DEFINE_string("output", None, "New directory for the exported variables and config.")
    flags.mark_flags_as_required(["workdir", "output"])
    app.run(main)
