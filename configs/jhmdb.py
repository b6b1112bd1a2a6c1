"""Pose propagation on JHMDB split-1 test (268 videos), PCK@0.1 and PCK@0.2.

  python -m mer_jax.evaluate --config=configs/jhmdb.py --config.checkpoint=DIR \
      --config.jhmdb_root=PATH/JHMDB
"""

import ml_collections
from ml_collections import config_dict

from configs import propagation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = propagation.benchmark_config("jhmdb")
    config.preset = "crw"
    config.jhmdb_root = config_dict.placeholder(str)  # Holds Rename_Images/, joint_positions/, splits/.
    config.jhmdb_split = 1
    config.jhmdb_sigma = 0.5  # Gaussian sigma (feature cells) of the first frame's joint heatmaps.
    config.jhmdb_topk = 3  # A joint is decoded from its heatmap's topk largest values.
    if arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/jhmdb.py")
    return config
