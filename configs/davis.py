"""Label propagation on DAVIS-2017 val (semi-supervised), scored with the official semantics.

  python -m mer_jax.evaluate --config=configs/davis.py --config.checkpoint=DIR \
      --config.davis_root=PATH/DAVIS [--config.preset=crw] [--config.encoder=lab]

Variants: `configs/davis.py:debug` shrinks the run for tests. `fields()` is the benchmark's own
section, also `config.evals.davis` during training (`propagation.training_eval`).
"""

import ml_collections
from ml_collections import config_dict

from configs import propagation

PRESET = "mer"  # 480p frames give a 120x214 feature grid (at least 120x160 in DAVIS): radius 14 stays local.


def fields() -> ml_collections.ConfigDict:
    """The DAVIS benchmark's own fields (`benchmarks/davis/evaluator.py`)."""
    fields = propagation.video_selection()
    fields.davis_root = config_dict.placeholder(str)  # The DAVIS folder (JPEGImages/, Annotations/, ImageSets/).
    fields.year = "2017"  # '2017' (palette masks, 255 void) or '2016' (grey single-object masks).
    fields.subset = "val"  # ImageSets/<year>/<subset>.txt lists the sequences.
    return fields


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = propagation.benchmark_config("davis", PRESET, fields())
    if arg == "debug":
        config.encoder = "lab"
        config.presets.mer.radius = 4
        config.presets.crw.radius = 4
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/davis.py or configs/davis.py:debug")
    return config
