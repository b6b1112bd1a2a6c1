"""Published PyTorch encoders as mer_jax exports:
`python -m mer_jax.convert --torch_checkpoint=PATH --arch=NAME --output=DIR`.

Reads the checkpoint as data (`torch_checkpoint`: no code from the file runs, torch is not
needed), brings its encoder's keys to canonical names (`convert_arches.canonical_keys`), checks
them one to one against the architecture's variables (every missing, unexpected or wrongly shaped
key is listed by name; nothing is loaded otherwise) and writes an export that
`mer_jax.evaluate --config.checkpoint=DIR` and `mer_jax.track --checkpoint=DIR` load like their
own: `DIR/variables` (Orbax), `DIR/config.json` and `DIR/converted.json` (`CONVERTED`: the
architecture, the input colour space and normalisation the project trained with, the output
stride, the source file and its SHA-256, and the keys set aside).
"""

import hashlib
import json
import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from configs import ytvos
from mer_jax import checkpointing, convert_arches, export, torch_checkpoint, train_state
from mer_jax.models import torch_resnet

CONVERTED = export.CONVERTED


class KeyMismatchError(ValueError):
    """The checkpoint's encoder keys do not match the architecture's variables one to one."""


def base_config(arch: convert_arches.Arch) -> ml_collections.ConfigDict:
    """The export's config.json: configs/ytvos.py with no flow and no VEN; for the 'mer'
    architecture, the encoder of MAST/MER-code (widths 64, 128, 256, 256 to 64 channels)."""
    config = ytvos.get_config()
    config.model.use_flow = config.model.use_ven = False
    config.model.use_sampler = config.model.use_weight_map = config.model.use_pos_neg = False
    config.model.encoder.pos_embed = arch.pos_embed
    if arch.colour == "lab":
        config.data.lab_mean, config.data.lab_std = arch.mean, arch.std
    return config


def abstract_variables(arch: convert_arches.Arch, config: ml_collections.ConfigDict, pos_side: int) -> dict:
    """Shapes of the architecture's variables: {'params': ..., 'batch_stats': ...} of ShapeDtypeStructs.
    `pos_side` is the side of the stem output the MER position table is learnt at."""
    rngs = {"params": jax.random.PRNGKey(0), "dropkey": jax.random.PRNGKey(0)}
    if arch.architecture == "torch_resnet":
        model = torch_resnet.TorchResNet(**arch.resnet)
        return jax.eval_shape(lambda: model.init(rngs, jnp.zeros((1, 64, 64, 3))))
    model = train_state.build_model(config)
    frames = jnp.zeros((1, 1, 2 * pos_side, 2 * pos_side, 3))
    return jax.eval_shape(lambda: model.init(rngs, frames))


def match_keys(arch: convert_arches.Arch, abstract: dict, tensors: dict[str, np.ndarray]) -> dict:
    """Our variables filled from canonical tensors {key: array}.

    Raises:
      KeyMismatchError: listing every missing key, unexpected key and shape mismatch by name.
    """
    flat = flax.traverse_util.flatten_dict(abstract)
    wanted = {convert_arches.torch_key(arch, path): path for path in flat}
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(set(tensors) - set(wanted))
    shapes = []
    for key in sorted(set(wanted) & set(tensors)):
        want = convert_arches.torch_shape(wanted[key], flat[wanted[key]].shape)
        if tuple(tensors[key].shape) != want:
            shapes.append(f"{key}: checkpoint {tuple(tensors[key].shape)}, architecture {want}")
    if missing or unexpected or shapes:
        lines = [
            f"the checkpoint does not fit this architecture ({len(tensors)} encoder tensors, {len(wanted)} wanted):"
        ]
        for title, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if names:
                lines.append(f"  {title} ({len(names)}): " + ", ".join(names))
        lines.append("Check --arch (python -m mer_jax.convert --helpfull lists them) and --state_key.")
        raise KeyMismatchError("\n".join(lines))
    filled = {path: convert_arches.from_torch(path, tensors[key]) for key, path in wanted.items()}
    return flax.traverse_util.unflatten_dict(filled)


def convert(torch_checkpoint_path: str, arch_name: str, output: str, state_key: str | None = None) -> dict:
    """Writes the export of one checkpoint; returns converted.json's content.

    Raises:
      ValueError: unknown arch; FileExistsError: `output` holds an export already; KeyMismatchError;
      torch_checkpoint.UnsafeCheckpointError: the file would run code.
    """
    if arch_name not in convert_arches.ARCHES:
        raise ValueError(f"--arch must be one of {sorted(convert_arches.ARCHES)}, got {arch_name!r}")
    arch = convert_arches.ARCHES[arch_name]
    output = os.path.abspath(os.path.expanduser(output))
    if os.path.exists(os.path.join(output, export.VARIABLES_DIR)):
        raise FileExistsError(f"{output}/{export.VARIABLES_DIR} already exists; choose a new --output")
    state = torch_checkpoint.state_dict(torch_checkpoint.load_state(torch_checkpoint_path), state_key)
    tensors, skipped = convert_arches.canonical_keys(arch, state)
    config = base_config(arch)
    pos = tensors.get("feature_extraction.pos_embed1")
    abstract = abstract_variables(arch, config, pos.shape[-1] if arch.pos_embed and pos is not None else 128)
    variables = match_keys(arch, abstract, tensors)
    with open(torch_checkpoint_path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    record = {
        "arch": arch_name,
        "architecture": arch.architecture,
        "resnet": arch.resnet,
        "input": {"colour": arch.colour, "mean": list(arch.mean), "std": list(arch.std)},
        "output_stride": arch.output_stride,
        "source": {"path": os.path.abspath(torch_checkpoint_path), "sha256": digest, "state_key": state_key},
        "loaded": len(tensors),
        "skipped": {reason: sorted(keys) for reason, keys in skipped.items() if keys},
    }
    checkpointing.save_tree(os.path.join(output, export.VARIABLES_DIR), variables)
    checkpointing.save_config(output, config)
    with open(os.path.join(output, CONVERTED), "w") as f:
        json.dump(record, f, indent=2)
    return record


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    record = convert(f.torch_checkpoint, f.arch, f.output, f.state_key)
    print(
        f"Converted {record['loaded']} tensors of {f.torch_checkpoint} ({f.arch}: {record['input']['colour']} input, "
        f"output stride {record['output_stride']}) to {f.output}"
    )
    for reason, keys in record["skipped"].items():
        print(f"  skipped, {reason} ({len(keys)}): {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}")


if __name__ == "__main__":
    flags.DEFINE_string("torch_checkpoint", None, "A PyTorch checkpoint (.pth/.pt, zip or legacy) or .safetensors.")
    flags.DEFINE_enum(
        "arch", None, sorted(convert_arches.ARCHES), "The checkpoint's encoder (mer_jax/convert_arches.py)."
    )
    flags.DEFINE_string("output", None, "New directory for the export.")
    flags.DEFINE_string("state_key", None, "The checkpoint's key holding the state dict (default: found).")
    flags.mark_flags_as_required(["torch_checkpoint", "arch", "output"])
    app.run(main)
