"""DAVIS semi-supervised scoring with the official semantics, and its reports.

Owns the object-weighted global numbers of a results folder and their reports (the official
toolkit's table, `global_results-<set>.csv`, `per-sequence_results-<set>.csv`, and a
full-precision JSON). The numbers equal those of the official `davis2017-evaluation` toolkit on
the same folders; the per-frame maths live in `metrics.py`, the files on disk in `data.py`, the
command line in `mer_jax/evaluation/davis.py`.
"""

import dataclasses
import json
import math
import pathlib
import warnings

import numpy as np
import tqdm

from mer_jax.evaluation.benchmarks.davis import data as davis_data
from mer_jax.evaluation.benchmarks.davis import metrics as davis_metrics

GLOBAL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
OBJECT_KEYS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


@dataclasses.dataclass(frozen=True)
class Scores:
    """Benchmark scores.

    Attributes:
        global_scores: GLOBAL_KEYS -> mean over all objects of the per-object numbers (J&F-Mean is
            (J-Mean + F-Mean) / 2).
        per_object: "<sequence>_<object id>" -> OBJECT_KEYS -> number, in sequence-list order.
    """

    global_scores: dict[str, float]
    per_object: dict[str, dict[str, float]]

    def as_dict(self) -> dict:
        """The JSON report: the global numbers and "per_object" (NaN as None, to stay valid JSON)."""

        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        report: dict = {key: clean(self.global_scores[key]) for key in GLOBAL_KEYS}
        report["per_object"] = {
            name: {key: clean(values[key]) for key in OBJECT_KEYS} for name, values in self.per_object.items()
        }
        return report


def _mean_over_objects(values: list[float]) -> float:
    # A plain mean as the official toolkit takes: an undefined object (NaN) makes the global NaN.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return float(np.mean(values))


def score(
    davis_root: str | pathlib.Path,
    results_dir: str | pathlib.Path,
    year: str = "2017",
    subset: str = "val",
    sequences: list[str] | None = None,
) -> Scores:
    """Scores a results folder on a DAVIS split, as the official semi-supervised evaluation.

    Per sequence: N = the largest id in the first annotation; every frame but the first and the last
    is scored (only those result PNGs are read, so the first and last may be absent); void pixels
    count as background. Global numbers are means over all objects. Results are read by the names
    of the ground-truth PNGs; where `JPEGImages/480p/<sequence>` exists, the ground truth must
    annotate exactly its frames (`davis_data.read_ground_truth`), so no frame goes unscored.

    Args:
        davis_root: the `DAVIS` folder.
        results_dir: folder of `<sequence>/<frame>.png` results.
        year: "2016" (grey single-object masks) or "2017" (palette multi-object masks).
        subset: split name, e.g. "val".
        sequences: score only these sequences of the split (default: all of them).

    Returns:
        The global and per-object scores.

    Raises:
        FileNotFoundError: a result PNG is missing, or the ground truth and the frames disagree
            (each named).
        ValueError: a result is unreadable, not an id mask, of another size or has more objects.
    """
    if year not in davis_data.YEARS:
        raise ValueError(f"year must be one of {davis_data.YEARS}, got {year!r}")
    per_object = {}
    for sequence in tqdm.tqdm(
        sequences or davis_data.read_sequence_list(davis_root, year, subset), desc="DAVIS sequences", unit="seq"
    ):
        per_object.update(score_sequence(davis_root, results_dir, sequence, year))
    return summarize(per_object)


def score_sequence(
    davis_root: str | pathlib.Path, results_dir: str | pathlib.Path, sequence: str, year: str
) -> dict[str, dict[str, float]]:
    """One sequence's objects scored as `score` scores them.

    Returns:
        "<sequence>_<object id>" -> OBJECT_KEYS -> number, for objects 1..N (N the largest id of
        the first annotation), in id order.
    """
    gt_ids, _, frame_names = davis_data.read_ground_truth(davis_root, sequence, year)
    num_objects = int(gt_ids[0].max())
    pred_ids = np.zeros_like(gt_ids)
    pred_ids[1:-1] = davis_data.read_results(
        results_dir, sequence, frame_names[1:-1], gt_ids.shape[1:], binary=year == "2016"
    )
    # The official semi-supervised scoring passes no void mask: void pixels are plain background.
    frames = davis_metrics.evaluate_sequence(gt_ids, pred_ids, None, num_objects, name=sequence)
    per_object = {}
    for k in range(num_objects):
        j_stats = davis_metrics.statistics(frames["J"][k])
        f_stats = davis_metrics.statistics(frames["F"][k])
        per_object[f"{sequence}_{k + 1}"] = dict(zip(OBJECT_KEYS, j_stats + f_stats))
    return per_object


def summarize(per_object: dict[str, dict[str, float]]) -> Scores:
    """The scores of objects ("<sequence>_<object id>" -> OBJECT_KEYS -> number, in sequence-list
    order): each global number the plain mean over the objects, J&F-Mean (J-Mean + F-Mean) / 2."""
    global_scores = {key: _mean_over_objects([obj[key] for obj in per_object.values()]) for key in OBJECT_KEYS}
    global_scores["J&F-Mean"] = (global_scores["J-Mean"] + global_scores["F-Mean"]) / 2
    return Scores({key: global_scores[key] for key in GLOBAL_KEYS}, per_object)


def _csv_number(value: float) -> str:
    # pandas `to_csv(float_format="%.3f")` as the official toolkit writes: NaN is an empty field.
    return "" if math.isnan(value) else f"{value:.3f}"


def write_csvs(scores: Scores, results_dir: str | pathlib.Path, subset: str) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes the official `global_results-<subset>.csv` and `per-sequence_results-<subset>.csv`.

    Args:
        scores: benchmark scores.
        results_dir: folder to write into.
        subset: split name in the file names.

    Returns:
        Paths of the global and the per-sequence CSV.
    """
    results_dir = pathlib.Path(results_dir)
    global_path = results_dir / f"global_results-{subset}.csv"
    per_sequence_path = results_dir / f"per-sequence_results-{subset}.csv"
    global_row = ",".join(_csv_number(scores.global_scores[key]) for key in GLOBAL_KEYS)
    global_path.write_text(",".join(GLOBAL_KEYS) + "\n" + global_row + "\n")
    rows = [
        f"{name},{_csv_number(values['J-Mean'])},{_csv_number(values['F-Mean'])}"
        for name, values in scores.per_object.items()
    ]
    per_sequence_path.write_text("\n".join(["Sequence,J-Mean,F-Mean", *rows]) + "\n")
    return global_path, per_sequence_path


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in [header, *rows])


def format_table(scores: Scores, subset: str = "val") -> str:
    """The official console report: the global table, then the per-object (J-Mean, F-Mean) table.

    Args:
        scores: benchmark scores.
        subset: split name for the titles.

    Returns:
        The report text.
    """
    global_table = _table(list(GLOBAL_KEYS), [[f"{scores.global_scores[key]:.6f}" for key in GLOBAL_KEYS]])
    per_sequence_table = _table(
        ["Sequence", "J-Mean", "F-Mean"],
        [[name, f"{values['J-Mean']:.6f}", f"{values['F-Mean']:.6f}"] for name, values in scores.per_object.items()],
    )
    return (
        f"--------------------------- Global results for {subset} ---------------------------\n"
        f"{global_table}\n\n"
        f"---------- Per sequence results for {subset} ----------\n"
        f"{per_sequence_table}"
    )


def main(
    davis_root: str | pathlib.Path,
    results_dir: str | pathlib.Path,
    year: str = "2017",
    subset: str = "val",
    json_path: str | pathlib.Path | None = None,
) -> Scores:
    """Scores a results folder, prints the report and writes the CSVs (and the JSON if asked).

    Args:
        davis_root: the `DAVIS` folder.
        results_dir: results folder; the CSVs are written into it.
        year: "2016" or "2017".
        subset: split name.
        json_path: where to write the full-precision JSON report, or None.

    Returns:
        The scores.
    """
    scores = score(davis_root, results_dir, year, subset)
    global_path, per_sequence_path = write_csvs(scores, results_dir, subset)
    print(format_table(scores, subset))
    print(f"\nGlobal results saved in {global_path}\nPer-sequence results saved in {per_sequence_path}")
    if json_path is not None:
        json_path = pathlib.Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(scores.as_dict(), indent=2))
        print(f"JSON results saved in {json_path}")
    return scores
