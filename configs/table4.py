"""The paper's Table 4 ablation: baseline, each MER module alone, and all of them.

  python -m mer_jax.sweep --config=configs/table4.py --workdir=DIR          # paper recipe
  python -m mer_jax.sweep --config=configs/table4.py:demo --workdir=DIR --config.sweep.seeds=3

Each row trains `sweep.seeds` times into DIR/<row>/seed_<k> with the base config plus the row's
switches (`sweep.rows` maps row names to switch overrides); DIR/sweep.json, sweep.txt and
sweep.png compare the rows with 95% intervals and the floors (`mer_jax/sweep.py`).
Variants: `:demo` (the demo config, `easy` videos), `:camouflage` (`configs/demo.py:camouflage`)
and `:debug` (tests).
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
    elif arg in ("demo", "debug", "camouflage"):
        config = demo.get_config(None if arg == "demo" else arg)
    else:
        raise ValueError(f"unknown variant {arg!r}; use configs/table4.py, :demo, :camouflage or :debug")
    config.sweep = ml_collections.ConfigDict()
    config.sweep.rows = ml_collections.ConfigDict({name: dict(row) for name, row in ROWS.items()})
    config.sweep.only = config_dict.placeholder(str)  # Comma-separated subset of rows; None: all.
    config.sweep.seeds = 1  # Runs per row, training seeds config.seed + 0 .. seeds - 1.
    config.sweep.baseline = "baseline"  # The row every other is paired with.
    return config
