"""Pose propagation on JHMDB split-1 test (268 videos), PCK@0.1 and PCK@0.2.

  python -m mer_jax.evaluate --config=configs/jhmdb.py --config.checkpoint=DIR \
      --config.jhmdb_root=PATH/JHMDB
"""

import ml_collections

from configs import davis


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = davis.base_config()
    config.benchmark = "jhmdb"
    config.preset = "crw"
    if arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/jhmdb.py")
    return config
