"""Label propagation on YouTube-VOS val; writes the official submission zip.

  python -m mer_jax.evaluate --config=configs/ytvos_val.py --config.checkpoint=DIR \
      --config.ytvos_root=PATH/valid
"""

import ml_collections

from configs import davis


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = davis.base_config()
    config.benchmark = "ytvos"
    if arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/ytvos_val.py")
    return config
