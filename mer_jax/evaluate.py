"""Evaluation by label propagation: `python -m mer_jax.evaluate --config=configs/davis.py ...`.

Builds the benchmark (`config.benchmark`, a key of `benchmark_run.BENCHMARKS`) from its section,
every field but the command's own `RUN_FIELDS`: its own fields, the propagation preset
(`config.preset`, every number in `config.presets`), `lab_temperature` and `feature_batch`
(`benchmark_run.BenchmarkRun`, the contract evaluation during training shares). Then it loads the
encoder (`config.encoder`: the trained model at `config.checkpoint`, or raw Lab pixels;
`config.eval.use_ven` refines each query frame with the model's VEN) and writes results under
`config.output`. With `config.floors` the same benchmark then scores the two floors (`floors.py`:
copy, lab) into `<output>/floors/<floor>`; `<output>/summary.json` holds {"results": the model's
numbers, "floors": {"copy": ..., "lab": ...}} and a table prints them side by side.
`<output>/report.html` shows the same numbers per video with overlay thumbnails
(`evaluation/report_html.py`; YouTube-VOS, scored by its server, has none).

Each benchmark splits its videos over every device of the run (`evaluation/video_shards.py`):
the local devices, and the processes of a multi-process job started with the training flags
(`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`, see `distributed.py`). Each
process writes its own videos' files; process 0 alone writes the merged results and prints.
"""

import os

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from mer_jax import distributed
from mer_jax.evaluation import benchmark_run, features, report_html, reports

# The fields of this command's own (configs/propagation.py, `benchmark_config`); the others are the
# benchmark's section (`benchmark_run.BenchmarkRun`).
RUN_FIELDS = ("benchmark", "checkpoint", "encoder", "lab_mean", "lab_std", "output", "eval", "floors")


def output_dir(config: ml_collections.ConfigDict) -> str:
    """config.output, or <checkpoint or .>/eval_<benchmark>_<encoder>_<preset>[_ven]."""
    if config.output is not None:
        return os.path.abspath(os.path.expanduser(config.output))
    trained = config.encoder == "trained" and config.checkpoint is not None
    base = os.path.expanduser(config.checkpoint) if trained else "."
    name = f"eval_{config.benchmark}_{config.encoder}_{config.preset}" + ("_ven" if config.eval.use_ven else "")
    return os.path.abspath(os.path.join(base, name))


def evaluate(config: ml_collections.ConfigDict) -> dict:
    """Runs the configured benchmark (and its floors); returns {"results": ..., "floors": ...} on
    every process (process 0 writes summary.json and prints the table)."""
    if config.benchmark not in benchmark_run.BENCHMARKS:
        raise ValueError(
            f"--config.benchmark must be one of {sorted(benchmark_run.BENCHMARKS)}, got {config.benchmark!r}"
        )
    section = {key: value for key, value in config.items() if key not in RUN_FIELDS}
    # Checks the data before loading a model.
    run = benchmark_run.BenchmarkRun(config.benchmark, section, lab_mean=config.lab_mean, lab_std=config.lab_std)
    encoder = features.make_encoder(
        config.encoder,
        config.checkpoint,
        feature_batch=config.feature_batch,
        lab_mean=config.lab_mean,
        lab_std=config.lab_std,
        use_ven=config.eval.use_ven,
    )
    output = output_dir(config)
    label = config.encoder + ("+ven" if config.eval.use_ven else "")
    summary = {"results": run.run(encoder, config.encoder, output), "floors": {}}
    if config.floors:
        # The lab encoder is its own floor.
        known = {config.encoder: summary["results"]} if config.encoder == "lab" else {}
        summary["floors"] = run.floors(output, known)
        run.print_comparison({label: summary["results"]})
    if jax.process_index() != 0:  # Process 0 writes and prints the merged results.
        return summary
    reports.write_json(os.path.join(output, "summary.json"), summary)
    page = run.report_page(label, summary["results"], output)
    if page is None:
        print(f"No report.html: the {config.benchmark} benchmark has no ground truth to score videos against.")
    else:
        report_html.write(os.path.join(output, "report.html"), page)
        print(f"Report: {os.path.join(output, 'report.html')}")
    return summary


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    distributed.initialize(f.coordinator_address, f.num_processes, f.process_id, auto=f.distributed_auto)
    evaluate(f.config)


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Evaluation config file.", lock_config=True)
    distributed.define_flags()
    flags.mark_flags_as_required(["config"])
    app.run(main)
