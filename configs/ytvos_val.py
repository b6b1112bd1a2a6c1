"""Label propagation on YouTube-VOS val; writes the official submission zip.

  python -m mer_jax.evaluate --config=configs/ytvos_val.py --config.checkpoint=DIR \
      --config.ytvos_root=PATH/valid

`fields()` is the benchmark's own section, also `config.evals.ytvos` during training
(`propagation.training_eval`).
"""

import ml_collections
from ml_collections import config_dict

from configs import propagation

PRESET = "mer"


def fields() -> ml_collections.ConfigDict:
    """The YouTube-VOS benchmark's own fields (`benchmarks/ytvos/evaluator.py`)."""
    fields = propagation.video_selection()
    fields.ytvos_root = config_dict.placeholder(str)  # YouTube-VOS valid/ (JPEGImages/, Annotations/, meta.json).
    # Frames taller than this are propagated at this height (None, from Python: native size; the
    # command line cannot give None to an int field, so pass a height above the frames' instead).
    fields.ytvos_max_height = config_dict.FieldReference(480, field_type=int)
    return fields


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = propagation.benchmark_config("ytvos", PRESET, fields())
    if arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/ytvos_val.py")
    return config
