"""Export trained weights for inference: `python -m mer_jax.export --workdir=DIR --output=DIR2`.

Writes the model's variables (parameters and BatchNorm statistics, no optimizer state) of the
latest checkpoint in DIR as an Orbax tree to `DIR2/variables`, and the training config to
`DIR2/config.json`. `load_exported(DIR2)` reads them back and `embed` computes features.
"""

import os
from typing import NamedTuple

import jax
import ml_collections
from absl import app, flags

from mer_jax import checkpointing, color, train_state
from mer_jax.models import mer

VARIABLES_DIR = "variables"


class ExportedModel(NamedTuple):
    """A trained model ready for inference."""

    model: mer.MER
    variables: dict  # {'params': ..., 'batch_stats': ...}
    config: ml_collections.ConfigDict


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
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
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
    """Reads an export written by `export` (or `python -m mer_jax.export`)."""
    config = checkpointing.load_config(path)
    variables = checkpointing.load_tree(os.path.join(os.path.abspath(path), VARIABLES_DIR))
    return ExportedModel(train_state.build_model(config), variables, config)


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
    """Features of uint8 RGB frames [B, H, W, 3] -> [B, ceil(H/4), ceil(W/4), embed_dim].

    Models trained with `use_flow` need each frame's flow [B, H, W, 2] (pixels, to the frame
    `flow_gap` earlier, e.g. from `mer_jax.data.flow.dis_flow`).
    """
    config = exported.config
    lab = color.uint8_rgb_to_normalized_lab(frames, tuple(config.data.lab_mean), tuple(config.data.lab_std))
    flow = None if flow is None else flow[:, None]
    return exported.model.apply(exported.variables, lab[:, None], flow, train=False, refine=False).features[:, 0]


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
