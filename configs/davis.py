"""Label propagation on DAVIS-2017 val (semi-supervised), scored with the official semantics.

  python -m mer_jax.evaluate --config=configs/davis.py --config.checkpoint=DIR \
      --config.davis_root=PATH/DAVIS [--config.preset=crw] [--config.encoder=lab]

Variants: `configs/davis.py:debug` shrinks the run for tests.
"""

import ml_collections

from configs import propagation


def base_config() -> ml_collections.ConfigDict:
    """Fields shared by every benchmark config."""
    config = ml_collections.ConfigDict()
    config.benchmark = "davis"
    config.checkpoint = ""  # A training workdir or an export directory (not needed for encoder=lab).
    config.encoder = "trained"  # 'trained' or 'lab' (raw Lab pixels at stride 4).
    config.preset = "mer"
    config.presets = propagation.presets()
    # The lab baseline always uses L2-normalised features at this temperature (MER_SPEC section 6).
    config.lab_temperature = 0.05
    config.lab_mean = (50.0, 0.0, 0.0)  # Lab normalisation of the lab encoder.
    config.lab_std = (50.0, 127.0, 127.0)
    config.output = ""  # Default: <checkpoint or .>/eval_<benchmark>_<encoder>_<preset>.
    config.save_overlays = False
    config.feature_batch = 4
    config.sequences = ""  # Comma-separated subset of sequences/videos (default: all).
    config.davis_root = ""
    config.year = "2017"
    config.subset = "val"
    config.jhmdb_root = ""
    config.jhmdb_split = 1
    config.jhmdb_sigma = 0.5
    config.jhmdb_topk = 3
    config.ytvos_root = ""
    config.ytvos_max_height = 480  # Frames taller than this are propagated at this height (0: native).
    return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    if arg == "debug":
        config.encoder = "lab"
        config.presets.mer.radius = 4
        config.presets.crw.radius = 4
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/davis.py or configs/davis.py:debug")
    return config
