"""The paper's Table 4 ablation: baseline, each MER module alone, and all of them.

  python -m mer_jax.sweep --config=configs/table4.py --workdir=DIR          # paper recipe
  python -m mer_jax.sweep --config=configs/table4.py:demo --workdir=DIR --config.sweep.seeds=3

Each row trains `sweep.seeds` times into DIR/<row>/seed_<k> with the base config plus the row's
switches (`sweep.rows` maps row names to switch overrides; `sweep.only` picks the rows, by default
the five of Table 4, leaving out `all_but_weight_map`, the weight map's own ablation); DIR/sweep.json, sweep.txt and
sweep.png compare the rows with 95% intervals and the floors (`mer_jax/sweep.py`).
Variants: `:demo` (the demo config, `easy` videos), `:camouflage` (`configs/demo.py:camouflage`),
`:real` (real video, below) and `:debug` (tests).

`:real` trains on the `real_clips` dataset built from the shared clips (README, 'Training on real
video') with configs/real.py:cpu's model and budget, and scores each run at 480p with the `mer`
preset on the eight DAVIS-2016 sequences of `ImageSets/2016/dev.txt` (the encoder's features; the
VEN path is left out, about 20 s per 480p frame on a CPU). The copy and lab floors are scored once
per sweep:

  python -m mer_jax.sweep --config=configs/table4.py:real --workdir=DIR --config.sweep.seeds=3 \
      --config.data.data_dir=TFDS_DIR --config.evals.davis.davis_root=PATH/DAVIS
"""

import ml_collections

from configs import demo, real, ytvos

ROWS = {
    "baseline": dict(use_flow=False, use_ven=False, use_sampler=False, use_weight_map=False, use_pos_neg=False),
    "motion": dict(use_flow=True, use_ven=True, use_sampler=False, use_weight_map=False, use_pos_neg=False),
    "sampler": dict(use_flow=False, use_ven=False, use_sampler=True, use_weight_map=False, use_pos_neg=False),
    "fused_loss": dict(use_flow=False, use_ven=False, use_sampler=False, use_weight_map=True, use_pos_neg=True),
    "all": dict(use_flow=True, use_ven=True, use_sampler=True, use_weight_map=True, use_pos_neg=True),
    # Not a Table-4 row: all modules but the weight map, to measure the weight map's own effect.
    "all_but_weight_map": dict(use_flow=True, use_ven=True, use_sampler=True, use_weight_map=False, use_pos_neg=True),
}
TABLE4_ROWS = ("baseline", "motion", "sampler", "fused_loss", "all")  # The rows a sweep runs by default.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg in (None, ""):
        config = ytvos.get_config()
    elif arg in ("demo", "debug", "camouflage"):
        config = demo.get_config(None if arg == "demo" else arg)
    elif arg == "real":
        config = real_video()
    else:
        raise ValueError(f"unknown variant {arg!r}; use configs/table4.py, :demo, :camouflage, :real or :debug")
    config.sweep = ml_collections.ConfigDict()
    config.sweep.rows = ml_collections.ConfigDict({name: dict(row) for name, row in ROWS.items()})
    config.sweep.only = ",".join(TABLE4_ROWS)  # Comma-separated rows to run (of sweep.rows); None: all.
    config.sweep.seeds = 1  # Runs per row, training seeds config.seed + 0 .. seeds - 1.
    config.sweep.baseline = "baseline"  # The row every other is paired with.
    # The config.evals section whose at-end scores the rows are compared by: synthetic or davis.
    config.sweep.benchmark = "davis" if arg == "real" else "synthetic"
    return config


def real_video() -> ml_collections.ConfigDict:
    """configs/real.py:cpu (96x96, batch 8, narrow widths), scored at the end on the eight
    DAVIS-2016 `dev` sequences at 480p, `mer` preset, encoder features only."""
    config = real.get_config("cpu")
    davis = config.evals.davis
    davis.year, davis.subset, davis.sequences = "2016", "dev", None
    davis.preset = "mer"
    davis.at_end, davis.score_ven = True, False
    return config
