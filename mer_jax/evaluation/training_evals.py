"""Evaluation during training: `config.evals.<name>` (configs/propagation.py, `training_eval`) runs
benchmark `<name>` of `benchmark_run.BENCHMARKS` on the current weights.

Each section holds `every_steps`, `at_end`, `score_ven` and the benchmark's section, the fields
`python -m mer_jax.evaluate` takes; errors name them as `--config.evals.<name>.<field>`. At every
multiple of `every_steps` and at the last step, `TrainingEvaluation.run` scores the trained encoder
(`trained`), its VEN-refined queries when the model has a VEN and `score_ven` is set
(`trained_ven`), and the copy and lab floors, which do not change with training and are scored at
the first run only (`benchmark_run.BenchmarkRun.floors`), or not at all when given (a sweep
scores them once for all its runs). Files go to `WORKDIR/eval_<name>/<path>`
and `WORKDIR/eval_<name>/floors/<floor>`; the summary {"preset", the benchmark's description,
<path>: scores, "floors": {...}} to `WORKDIR/eval_<name>/summary.json` (the synthetic benchmark's
to `WORKDIR/eval_results.json`, the file the sweep reads); TensorBoard gets `<name>/<path>/<key>`
and `<name>/floors/<floor>/<key>`. Benchmarks split their videos over every device of the run
(`video_shards`) except the synthetic one, which runs whole on every process; only process 0
writes the merged files and prints. Each completed evaluation is noted in
`WORKDIR/evaluated.json` (`record`), so a run stopped during one evaluates again when it resumes.
"""

import json
import os
from typing import Any, Mapping

import jax
import ml_collections

from mer_jax import export
from mer_jax.evaluation import benchmark_run, features, reports

RECORD_FILE = "evaluated.json"  # {name: {"step", "section"}}: the last evaluation of each that completed.
TRAINING_FIELDS = ("every_steps", "at_end", "score_ven")  # The section's fields that are not the benchmark's.
SUMMARY_FILES = {"synthetic": "eval_results.json"}  # Relative to the workdir; others: eval_<name>/summary.json.
_PER_ITEM = ("per_object", "per_video")  # Per-object and per-video scores stay out of TensorBoard.


def flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested {name: {key: number}} -> {"<name>/<key>": float}, leaving out per-object and
    per-video scores and anything that is not a number."""
    flat = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            if key not in _PER_ITEM:
                flat.update(flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


class TrainingEvaluation:
    """One `config.evals.<name>` section, built once (its data checked before training starts).

    Args:
      name: the section's name, a key of `benchmark_run.BENCHMARKS`.
      section: the section's fields.
      data: the training config's `data` section (the floors' Lab normalisation; the synthetic
        benchmark's videos where its image_size, flow_gap or kind are None).
      floors: {"copy": scores, "lab": scores} already scored for this very section and data (a
        sweep scores them once, `sweep.sweep_floors`): taken as they are, not scored again.

    Raises:
      ValueError: an unknown name; `FieldError` for a bad field, naming `--config.evals.<name>.<field>`.
    """

    def __init__(
        self,
        name: str,
        section: ml_collections.ConfigDict,
        data: ml_collections.ConfigDict,
        floors: Mapping[str, dict] | None = None,
    ):
        if name not in benchmark_run.BENCHMARKS:
            raise ValueError(f"config.evals.{name}: unknown benchmark; use one of {sorted(benchmark_run.BENCHMARKS)}")
        fields = {key: value for key, value in section.items() if key not in TRAINING_FIELDS}
        self.benchmark = benchmark_run.BenchmarkRun(
            name, fields, lab_mean=data.lab_mean, lab_std=data.lab_std, prefix=f"evals.{name}.", training_data=data
        )
        self.name, self.every_steps, self.at_end = name, section.every_steps, section.at_end
        self.score_ven, self.feature_batch = section.score_ven, section.feature_batch
        self.section = json.loads(section.to_json())  # What `record` keeps, to tell a changed section.
        self.known_floors = dict(floors or {})

    def due(self, step: int, total_steps: int) -> bool:
        """Whether to evaluate after `step`: at every multiple of every_steps, and at the end with at_end."""
        return bool(self.every_steps and step % self.every_steps == 0) or (self.at_end and step == total_steps)

    def completed(self, workdir: str, step: int) -> bool:
        """Whether this evaluation, with this section, completed after `step` (`RECORD_FILE`)."""
        return _read_record(workdir).get(self.name) == {"step": step, "section": self.section}

    def record(self, workdir: str, step: int) -> None:
        """Notes, on process 0, that this evaluation completed after `step` (replaced atomically)."""
        if jax.process_index() != 0:
            return
        record = {**_read_record(workdir), self.name: {"step": step, "section": self.section}}
        temporary = os.path.join(workdir, f".{RECORD_FILE}.tmp")
        with open(temporary, "w") as f:
            json.dump(record, f, indent=2)
        os.replace(temporary, os.path.join(workdir, RECORD_FILE))

    def run(self, model: export.ExportedModel, workdir: str) -> dict[str, float]:
        """Scores the model's paths (and the floors, once); returns the TensorBoard scalars
        {"trained/J&F-Mean": ..., "floors/copy/J&F-Mean": ...} on every process."""
        output = os.path.join(workdir, f"eval_{self.name}")
        paths = {"trained": features.TrainedEncoder(model, batch=self.feature_batch)}
        if model.model.use_ven and self.score_ven:
            paths["trained_ven"] = features.TrainedEncoder(model, batch=self.feature_batch, use_ven=True)
        results = {
            path: self.benchmark.run(encoder, "trained", os.path.join(output, path)) for path, encoder in paths.items()
        }
        results["floors"] = self.benchmark.floors(output, self.known_floors)
        self.benchmark.print_comparison({path: results[path] for path in paths})
        if jax.process_index() == 0:
            summary = {"preset": self.benchmark.fields["preset"], **self.benchmark.description(), **results}
            path = os.path.join(
                workdir, SUMMARY_FILES.get(self.name, os.path.join(f"eval_{self.name}", "summary.json"))
            )
            reports.write_json(path, summary)
        return flatten(results)


def _read_record(workdir: str) -> dict:
    """`RECORD_FILE`'s content ({} when there is none)."""
    path = os.path.join(workdir, RECORD_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def from_config(
    config: ml_collections.ConfigDict, floors: Mapping[str, Mapping[str, dict]] | None = None
) -> dict[str, TrainingEvaluation]:
    """{name: TrainingEvaluation} of config.evals, in the config's order; `floors` {name: floors}
    gives sections their floors already scored (`TrainingEvaluation`)."""
    floors = floors or {}
    return {
        name: TrainingEvaluation(name, section, config.data, floors.get(name)) for name, section in config.evals.items()
    }
