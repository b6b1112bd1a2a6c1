"""Runs the rows x seeds of a sweep config: `python -m mer_jax.sweep --config=configs/table4.py --workdir=DIR`.

Each row of `config.sweep.rows` ({row: {switch: value}}) trains `config.sweep.seeds` times into
`DIR/<row>/seed_<k>` (training seed `config.seed + k`), seed by seed: every row's seed 0, then
every row's seed 1, and so on. Each run is scored at its end by `config.evals.<benchmark>`
(`config.sweep.benchmark`: `synthetic`, held-out procedural videos that are the same for every
run, or `davis`, a DAVIS split). The copy and lab floors do not depend on the run: the sweep
scores them once, into `DIR/floors/` (kept in `FLOORS` and reused while that section is
unchanged), and every run takes them as they are. After each complete round of seeds, every
run's scores (its summary, `training_evals.SUMMARY_FILES`) and module diagnostics
(`diagnostics.json`) are collected and `sweep_report` writes, into DIR: the printed table (also
`sweep.txt`), `sweep.json` (per row and path: J&F mean with a 95% interval over seeds, the paired
per-object difference to `config.sweep.baseline` with a 95% interval over objects x seeds, the
diagnostics; the floors; the per-sequence table) and `sweep.png` (the chart).

A sweep stopped at any moment and started again with the same command skips the finished runs
(`FINISHED`, kept for the same config only), resumes the interrupted one from its last
checkpoint (re-running an evaluation the stop cut short: `training_evals.RECORD_FILE`) and
writes the same report as an uninterrupted sweep, so a long sweep can span sessions; the report
of the seeds finished so far is there meanwhile.
"""

import json
import os

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from mer_jax import sweep_report, train
from mer_jax.evaluation import reports, training_evals

# In a run's folder, written once its results are in: {"config": the run's config, "results": its
# held-out results and diagnostics}. A sweep started again skips the runs it marks as finished.
FINISHED = "sweep_run.json"
# In the sweep's folder: {"benchmark", "section", "data": what the floors were scored for, "floors"}.
FLOORS = "floors.json"


def row_config(config: ml_collections.ConfigDict, row: str, seed_index: int = 0) -> ml_collections.ConfigDict:
    """The base config with the row's switches applied, training seed config.seed + seed_index
    (and no sweep section)."""
    overrides = config.sweep.rows[row]
    base = ml_collections.ConfigDict(config.to_dict())
    del base["sweep"]
    for name, value in overrides.items():
        if name not in base.model:
            raise ValueError(f"sweep row {row!r} sets unknown switch model.{name}")
        base.model[name] = value
    base.seed = config.seed + seed_index
    return base


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains every (selected) row for every seed, seed by seed, and writes the report after each
    round of seeds; returns sweep.json's content.

    Raises:
      ValueError: unknown rows, switches or benchmark, fewer than one seed, no
        `evals.<sweep.benchmark>` scored at the end (nothing to compare), or runs whose floors
        differ (they were evaluated on other videos).
    """
    rows = list(config.sweep.rows) if config.sweep.only is None else config.sweep.only.split(",")
    unknown = sorted(set(rows) - set(config.sweep.rows))
    if unknown:
        raise ValueError(f"unknown sweep rows {unknown}; the config has {sorted(config.sweep.rows)}")
    if config.sweep.seeds < 1:
        raise ValueError(f"sweep.seeds must be at least 1, got {config.sweep.seeds}")
    name = config.sweep.benchmark
    if name not in config.evals or not config.evals[name].at_end:
        raise ValueError(
            f"a sweep compares the scores of config.evals.{name} (sweep.benchmark): "
            f"the config needs that section with at_end=True"
        )
    configs = {row: [row_config(config, row, k) for k in range(config.sweep.seeds)] for row in rows}
    floors = sweep_floors(configs[rows[0]][0], name, workdir)
    runs = {row: [] for row in rows}
    report = {}
    for k in range(config.sweep.seeds):
        for row in rows:
            run_dir = os.path.join(workdir, row, f"seed_{k}")
            runs[row].append(run_once(configs[row][k], run_dir, name, floors))
        report = write_report(runs, config.sweep.baseline, workdir)
    return report


def sweep_floors(config: ml_collections.ConfigDict, name: str, workdir: str) -> dict[str, dict]:
    """{"copy": scores, "lab": scores} of `config.evals[name]`, scored once into `workdir/floors/`
    and kept in `workdir/FLOORS`; read from there while the section and the data are the same
    (the rows change model switches and the seed only, never what the floors depend on)."""
    wanted = {
        "benchmark": name,
        "section": json.loads(config.evals[name].to_json()),
        "data": json.loads(config.data.to_json()),
    }
    kept = _read_json(os.path.join(workdir, FLOORS))
    if kept is not None and {key: kept[key] for key in wanted} == wanted:
        logging.info("Sweep floors: read from %s", os.path.join(workdir, FLOORS))
        return kept["floors"]
    evaluation = training_evals.TrainingEvaluation(name, config.evals[name], config.data)
    floors = evaluation.benchmark.floors(workdir)
    if jax.process_index() == 0:
        reports.write_json(os.path.join(workdir, FLOORS), {**wanted, "floors": floors})
    return floors


def run_once(
    config: ml_collections.ConfigDict, run_dir: str, benchmark: str = "synthetic", floors: dict | None = None
) -> dict:
    """One run's summary of `config.evals[benchmark]` with its diagnostics, training (or resuming)
    it unless `run_dir` holds a finished run of this very config (`FINISHED`, written last: a run
    stopped at any moment before it is resumed by `train.train_and_evaluate`). `floors`, scored
    once by the sweep, are not scored again."""
    wanted = json.loads(config.to_json())
    finished = _read_json(os.path.join(run_dir, FINISHED))
    if finished is not None and finished["config"] == wanted:
        logging.info("Sweep run %s: finished, skipped", run_dir)
        return finished["results"]
    logging.info("Sweep run %s", run_dir)
    train.train_and_evaluate(config, run_dir, floors={benchmark: floors} if floors else None)
    summary = training_evals.SUMMARY_FILES.get(benchmark, os.path.join(f"eval_{benchmark}", "summary.json"))
    results = _read_json(os.path.join(run_dir, summary))
    if results is None:
        raise FileNotFoundError(f"{run_dir}/{summary} is missing: the run's evaluation failed")
    results["diagnostics"] = _read_json(os.path.join(run_dir, "diagnostics.json")) or {}
    temporary = os.path.join(run_dir, f".{FINISHED}.tmp")
    with open(temporary, "w") as f:
        json.dump({"config": wanted, "results": results}, f, indent=2)
    os.replace(temporary, os.path.join(run_dir, FINISHED))
    return results


def write_report(runs: dict[str, list[dict]], baseline: str, workdir: str) -> dict:
    """Summarises {row: [eval results per seed]} (every row the same number of seeds) into
    sweep.json, sweep.txt and sweep.png; prints the tables."""
    first = next(iter(runs.values()))[0]
    floors = {name: scores["J&F-Mean"] for name, scores in first["floors"].items()}
    for row, results in runs.items():
        for results_of_seed in results:
            other = {name: scores["J&F-Mean"] for name, scores in results_of_seed["floors"].items()}
            if other != floors:
                raise ValueError(f"row {row!r} was evaluated on other held-out videos (floors {other} vs {floors})")
    reference = baseline if baseline in runs else next(iter(runs))
    runs = {reference: runs[reference], **runs}  # The baseline row first.
    summary = sweep_report.summarise(runs, reference)
    seeds = len(next(iter(runs.values())))
    sequences = sweep_report.per_sequence(runs)
    report = {
        "baseline": reference, "seeds": seeds, "preset": first["preset"], "kind": first["kind"],
        "videos": first["videos"], "objects": first["floors"]["copy"]["objects"], "floors": floors, "rows": summary,
        "per_sequence": sequences,
    }  # fmt: skip
    title = f"{first['kind']} held-out set: {int(first['videos'])} videos, {seeds} seed(s), preset {first['preset']}"
    table = "\n".join(
        [title, sweep_report.format_table(summary, floors, reference), "", sweep_report.format_sequences(sequences)]
    )
    print(table)
    with open(os.path.join(workdir, "sweep.json"), "w") as f:
        json.dump(reports.jsonable(report), f, indent=2)
    with open(os.path.join(workdir, "sweep.txt"), "w") as f:
        f.write(table + "\n")
    sweep_report.write_chart(os.path.join(workdir, "sweep.png"), summary, floors, title)
    return report


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Each run trains into <workdir>/<row>/seed_<k>; the report goes here.")
    config_flags.DEFINE_config_file("config", None, "Sweep config file (with a `sweep` section).", lock_config=True)
    flags.mark_flags_as_required(["workdir", "config"])
    app.run(main)
