"""The paper's Table 4 ablation: baseline, each MER module alone, and all of them.

  python -m mer_jax.sweep --config=configs/table4.py --workdir=DIR          # paper recipe
  python -m mer_jax.sweep --config=configs/table4.py:demo --workdir=DIR     # on the embedded videos

Each row trains into DIR/<row> with the base config plus the row's switches; `sweep.rows`
maps row names to switch overrides.
"""

import ml_collections
from ml_collections import config_dict

from configs import demo, ytvos

ROWS = {
    "baseline": dict(use_flow=False, use_ven=False, use_sampler=False, use_weight_map=False, use_pos_neg=False),
    "motion": dict(use_flow=True, use_ven=True, use_sampler=False, use_weight_map=False, use_pos_neg=False),
    "sampler": dict(use_flow=False, use_ven=False, use_sampler=True, use_weight_map=False, use_pos_neg=False),
    "fused_loss": dict(use_flow=False, use_ven=False, use_sampler=False, use_weight_map=True, use_pos_neg=True),
    "all": dict(use_flow=True, use_ven=True, use_sampler=True, use_weight_map=True, use_pos_neg=True),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg in (None, ""):
        config = ytvos.get_config()
    elif arg in ("demo", "debug"):
        config = demo.get_config("debug" if arg == "debug" else None)
    else:
        raise ValueError(f"unknown variant {arg!r}; use configs/table4.py, :demo or :debug")
    config.sweep = ml_collections.ConfigDict()
    config.sweep.rows = ml_collections.ConfigDict({name: dict(row) for name, row in ROWS.items()})
    config.sweep.only = config_dict.placeholder(str)  # Comma-separated subset of rows; None: all.
    return config
