"""One benchmark scored for a model beside the copy and lab floors: the contract that
`python -m mer_jax.evaluate` and `config.evals.<name>` during training share.

A benchmark (`BENCHMARKS[name]`, one package under `benchmarks/`) is a class built from its own
config fields as keyword arguments, which checks its data there (before a model is loaded) and
raises `FieldError` for a bad field, with
  - `run(encoder, preset, output_dir) -> scores`: scores one encoder; process 0 writes its files
    into output_dir; every process returns the (merged) scores;
  - `HEADLINE_KEYS`: the numbers its comparison table shows;
and optionally `check_preset(preset)` (refuses a protocol the benchmark cannot use),
`description()` (what a summary says about its data), `from_training_data(fields, data)`
(fields left None that take the training data's values, during training only) and
`report_page(columns, output_dir)` (the page of `report_html.py` showing columns {name: scores},
the model's then the floors', with thumbnails read from the model's output_dir).

A benchmark's config section is the same in both places: its own fields plus `PROPAGATION_FIELDS`
(configs/propagation.py, `propagation_fields`). `BenchmarkRun` builds it once and scores the floors
once (`floors`), whatever the number of encoders and runs.
"""

import os
from typing import Any, Mapping

import jax

from mer_jax.evaluation import floors, protocol, report_html, reports, vos
from mer_jax.evaluation.benchmarks.davis import evaluator as davis
from mer_jax.evaluation.benchmarks.jhmdb import evaluator as jhmdb
from mer_jax.evaluation.benchmarks.synthetic import evaluator as synthetic
from mer_jax.evaluation.benchmarks.tapvid import evaluator as tapvid
from mer_jax.evaluation.benchmarks.ytvos import evaluator as ytvos
from mer_jax.evaluation.field_errors import FieldError

BENCHMARKS = {
    "davis": davis.Evaluator,
    "jhmdb": jhmdb.Evaluator,
    "synthetic": synthetic.Evaluator,
    "tapvid": tapvid.Evaluator,
    "ytvos": ytvos.Evaluator,
}
# The fields of a benchmark section that choose the propagation protocol (the rest are the benchmark's).
PROPAGATION_FIELDS = ("preset", "presets", "lab_temperature", "feature_batch")


class BenchmarkRun:
    """A benchmark, its propagation preset and its floors, built once from its config section.

    Args:
      name: a key of BENCHMARKS.
      fields: the section: PROPAGATION_FIELDS and the benchmark's own fields (other keys are the
        caller's and must be left out).
      lab_mean, lab_std: the lab floor's normalisation.
      prefix: where the section sits in the config, for error messages ('' for mer_jax.evaluate,
        'evals.<name>.' during training).
      training_data: config.data of the run being trained (None outside training).

    Raises:
      FieldError: a bad field, its message naming the flag as `--config.<prefix><field>`.
    """

    def __init__(
        self,
        name: str,
        fields: Mapping[str, Any],
        *,
        lab_mean: tuple[float, ...],
        lab_std: tuple[float, ...],
        prefix: str = "",
        training_data: Any = None,
    ):
        benchmark = BENCHMARKS[name]
        own = {key: value for key, value in fields.items() if key not in PROPAGATION_FIELDS}
        if training_data is not None and hasattr(benchmark, "from_training_data"):
            own = benchmark.from_training_data(own, training_data)
        try:
            if fields["preset"] not in fields["presets"]:
                raise FieldError(
                    "preset", f"{{flag}} must be one of {sorted(fields['presets'])}, got {fields['preset']!r}"
                )
            self.benchmark = benchmark(**own)
            if hasattr(self.benchmark, "check_preset"):
                self.benchmark.check_preset(self.preset("trained", fields))
        except FieldError as error:
            raise error.under(prefix) from None
        self.name, self.fields = name, dict(fields)
        self.lab_mean, self.lab_std = tuple(lab_mean), tuple(lab_std)
        self._floors: dict[str, dict] | None = None

    @staticmethod
    def preset(encoder: str, fields: Mapping[str, Any]) -> protocol.Preset:
        """The section's preset for an encoder kind ('trained' or 'lab': `protocol.make_preset`)."""
        return protocol.make_preset(fields["presets"][fields["preset"]], encoder, fields["lab_temperature"])

    def run(self, encoder: vos.FrameEncoder | vos.CopyFirstFrame, kind: str, output_dir: str) -> dict:
        """The benchmark's scores of one encoder of kind 'trained' or 'lab', its files in output_dir.

        Raises:
          ValueError: the encoder's output stride is not the preset's (`protocol.check_stride`).
        """
        preset = self.preset(kind, self.fields)
        if not isinstance(encoder, vos.CopyFirstFrame):
            protocol.check_stride(self.fields["preset"], preset, encoder.stride, self.fields["presets"])
        return self.benchmark.run(encoder, preset, output_dir)

    def floors(self, output: str, known: Mapping[str, dict] | None = None) -> dict[str, dict]:
        """{"copy": scores, "lab": scores}, scored into `<output>/floors/<floor>` at the first call
        only (they do not change with training); floors in `known` are taken as they are."""
        if self._floors is None:
            known = known or {}
            self._floors = {
                name: known[name] if name in known else self.run(encoder, "lab", os.path.join(output, "floors", name))
                for name, encoder in floors.floor_encoders(
                    self.lab_mean, self.lab_std, self.preset("lab", self.fields).stride
                ).items()
            }
        return self._floors

    def print_comparison(self, rows: Mapping[str, dict]) -> None:
        """Prints, on process 0, the headline numbers of rows {label: scores} beside the floors."""
        keys = self.benchmark.HEADLINE_KEYS
        if jax.process_index() != 0 or not keys or self._floors is None:
            return
        rows = {**rows, **{f"{name} floor": scores for name, scores in self._floors.items()}}
        heading = f"\n{self.name} ({self.fields['preset']} preset) beside its floors:\n"
        print(heading + reports.comparison_table(rows, keys))

    def description(self) -> dict:
        """What a summary says about the benchmark's data (`description()`, where it has one)."""
        return self.benchmark.description() if hasattr(self.benchmark, "description") else {}

    def report_page(self, label: str, results: dict, output: str) -> report_html.Page | None:
        """The benchmark's report page of the scores `results` of the encoder called `label` (its
        files in output) beside the floors scored so far; None for a benchmark without one."""
        if not hasattr(self.benchmark, "report_page"):
            return None
        columns = {label: results, **{f"{name} floor": scores for name, scores in (self._floors or {}).items()}}
        page = self.benchmark.report_page(columns, output)
        return page._replace(title=f"{page.title}: {label}, {self.fields['preset']} preset")
