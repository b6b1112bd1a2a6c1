"""Scores a results folder exactly as the official davis2017-evaluation toolkit (the scoring
lives in `benchmarks/davis/scoring.py`):

    python -m mer_jax.evaluation.davis --davis_root=PATH/DAVIS --results=DIR [--year=2017] [--set=val] \\
        [--json=PATH]
"""

from mer_jax.evaluation.benchmarks.davis import data, scoring

if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("davis_root", None, "The DAVIS folder (holding JPEGImages, Annotations, ImageSets).")
    flags.DEFINE_string("results", None, "Results folder of <sequence>/<frame>.png; the CSVs are written here.")
    flags.DEFINE_enum("year", "2017", list(data.YEARS), "DAVIS edition: 2017 palette masks or 2016 grey masks.")
    flags.DEFINE_string("set", "val", "Split: ImageSets/<year>/<set>.txt lists its sequences.")
    flags.DEFINE_string("json", None, "Also write the full-precision scores as JSON to this path.")
    flags.mark_flags_as_required(["davis_root", "results"])

    def _run(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        flag_values = flags.FLAGS
        scoring.main(flag_values.davis_root, flag_values.results, flag_values.year, flag_values.set, flag_values.json)

    app.run(_run)
