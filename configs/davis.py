"""Label propagation on DAVIS-2017 val (semi-supervised), scored with the official semantics.

  python -m mer_jax.evaluate --config=configs/davis.py --config.checkpoint=DIR \
      --config.davis_root=PATH/DAVIS [--config.preset=crw] [--config.encoder=lab]

Variants: `configs/davis.py:debug` shrinks the run for tests.
"""

import ml_collections
from ml_collections import config_dict

from configs import propagation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = propagation.benchmark_config("davis")
    config.davis_root = config_dict.placeholder(str)  # The DAVIS folder (JPEGImages/, Annotations/, ImageSets/).
    config.year = "2017"  # '2017' (palette masks, 255 void) or '2016' (grey single-object masks).
    config.subset = "val"  # ImageSets/<year>/<subset>.txt lists the sequences.
    if arg == "debug":
        config.encoder = "lab"
        config.presets.mer.radius = 4
        config.presets.crw.radius = 4
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/davis.py or configs/davis.py:debug")
    return config
