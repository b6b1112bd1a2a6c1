"""Pose propagation on JHMDB split-1 test (268 videos), PCK@0.1 and PCK@0.2.

  python -m mer_jax.evaluate --config=configs/jhmdb.py --config.checkpoint=DIR \
      --config.jhmdb_root=PATH/JHMDB

`fields()` is the benchmark's own section, also `config.evals.jhmdb` during training
(`propagation.training_eval`).
"""

import ml_collections
from ml_collections import config_dict

from configs import propagation

PRESET = "crw"


def fields() -> ml_collections.ConfigDict:
    """The JHMDB benchmark's own fields (`benchmarks/jhmdb/evaluator.py`)."""
    fields = propagation.video_selection()
    fields.jhmdb_root = config_dict.placeholder(str)  # Holds Rename_Images/, joint_positions/, splits/.
    fields.jhmdb_split = 1
    fields.jhmdb_sigma = 0.5  # Gaussian sigma (feature cells) of the first frame's joint heatmaps.
    fields.jhmdb_topk = 3  # A joint is decoded from its heatmap's topk largest values.
    return fields


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = propagation.benchmark_config("jhmdb", PRESET, fields())
    if arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/jhmdb.py")
    return config
