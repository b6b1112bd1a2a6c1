"""Runs the rows of a sweep config: `python -m mer_jax.sweep --config=configs/table4.py --workdir=DIR`.

Each row of `config.sweep.rows` ({row: {switch: value}}) trains into `DIR/<row>` with the base
config's other fields (resuming like any run), then `DIR/sweep_results.json` collects each row's
held-out evaluation (`eval_results.json`, written by the `config.evals.synthetic` evaluator).
"""

import json
import os

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from mer_jax import train


def row_config(config: ml_collections.ConfigDict, row: str) -> ml_collections.ConfigDict:
    """The base config with the row's switches applied (and no sweep section)."""
    overrides = config.sweep.rows[row]
    base = ml_collections.ConfigDict(config.to_dict())
    del base["sweep"]
    for name, value in overrides.items():
        if name not in base.model:
            raise ValueError(f"sweep row {row!r} sets unknown switch model.{name}")
        base.model[name] = value
    return base


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains every (selected) row; returns {row: eval results or {}}."""
    rows = list(config.sweep.rows) if config.sweep.only is None else config.sweep.only.split(",")
    unknown = sorted(set(rows) - set(config.sweep.rows))
    if unknown:
        raise ValueError(f"unknown sweep rows {unknown}; the config has {sorted(config.sweep.rows)}")
    results = {}
    for row in rows:
        logging.info("Sweep row %s", row)
        row_dir = os.path.join(workdir, row)
        train.train_and_evaluate(row_config(config, row), row_dir)
        path = os.path.join(row_dir, "eval_results.json")
        results[row] = {}
        if os.path.exists(path):
            with open(path) as f:
                results[row] = json.load(f)
    with open(os.path.join(workdir, "sweep_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    for row, scores in results.items():
        if scores:
            print(f"{row:12s} trained J&F {scores['trained']['J&F-Mean']:.4f}  lab J&F {scores['lab']['J&F-Mean']:.4f}")
    return results


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Each sweep row trains into <workdir>/<row>.")
    config_flags.DEFINE_config_file("config", None, "Sweep config file (with a `sweep` section).", lock_config=True)
    flags.mark_flags_as_required(["workdir", "config"])
    app.run(main)
