"""DAVIS semi-supervised benchmark: scoring with the official semantics, reports, the CLI and the Evaluator.

Owns the object-weighted global numbers of a results folder and their reports (the official
toolkit's table, `global_results-<set>.csv`, `per-sequence_results-<set>.csv`, and a
full-precision JSON). The numbers equal those of the official `davis2017-evaluation` toolkit on
the same folders; the per-frame maths live in `davis_metrics.py`, the files on disk in
`davis_data.py`. The `Evaluator` segments the sequences with the VOS loop (`vos.py`) and scores
them (docs/method.md, 'Benchmarks').

    python -m mer_jax.evaluation.davis --davis_root=PATH/DAVIS --results=DIR [--year=2017] [--set=val] \\
        [--json=PATH]
"""

import dataclasses
import functools
import json
import math
import pathlib
import warnings
from typing import Iterator

import jax
import numpy as np
import tqdm

from mer_jax.evaluation import background, davis_data, davis_metrics, protocol, video_shards, vos

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


class Evaluator:
    """Propagates each sequence's first-frame annotation and scores the written results.

    Results are palette PNGs `<output>/<sequence>/<frame>.png` with the annotation's size and
    palette (frame 0 is the given annotation), so the official toolkit reads them unchanged.

    Args:
        davis_root: the DAVIS folder (JPEGImages/, Annotations/, ImageSets/).
        year: "2016" or "2017".
        subset: split name (`ImageSets/<year>/<subset>.txt`).
        sequences: comma-separated sequences of the split to run (None: all), in this order.
        save_overlays: also write `<output>/overlays/<sequence>.mp4`.
    """

    def __init__(self, *, davis_root: str | None, year: str, subset: str, sequences: str | None, save_overlays: bool):
        if davis_root is None:
            raise ValueError(
                "set --config.davis_root=PATH (the DAVIS folder with JPEGImages/, Annotations/, ImageSets/)"
            )
        if year not in davis_data.YEARS:
            raise ValueError(f"year must be one of {davis_data.YEARS}, got {year!r}")
        self.root = pathlib.Path(davis_root).expanduser()
        self.year, self.subset, self.save_overlays = year, subset, save_overlays
        self.sequences = davis_data.read_sequence_list(self.root, year, subset)
        if sequences is not None:
            wanted = sequences.split(",")
            unknown = sorted(set(wanted) - set(self.sequences))
            if unknown:
                raise ValueError(f"sequences {unknown} are not in ImageSets/{year}/{subset}.txt")
            self.sequences = wanted

    def run(self, encoder: vos.FrameEncoder, preset: protocol.Preset, output_dir: str) -> dict[str, float]:
        """Writes the results, the CSVs and results.json into output_dir; returns the global scores.

        The sequences are split over the run's devices and processes (`video_shards`): each
        process writes and scores its own sequences' masks; process 0 writes the CSVs and
        results.json and prints the table. Every process returns the global scores.
        """
        output = pathlib.Path(output_dir)

        def segment_and_score(share: video_shards.Share, videos: Iterator[vos.Video]) -> list[dict]:
            sequences = []
            with background.Writer() as writer:  # PNGs written while the next sequence is segmented
                for video, masks in vos.segment_videos(videos, encoder, preset, desc="DAVIS sequences" + share.label):
                    sequences.append(video.name)
                    writer.submit(vos.write_masks, output / video.name, video, masks)
                    if self.save_overlays:
                        writer.submit(vos.write_overlay, str(output / "overlays" / f"{video.name}.mp4"), video, masks)
            return [
                score_sequence(self.root, output, sequence, self.year)
                for sequence in tqdm.tqdm(sequences, desc="DAVIS scoring" + share.label, unit="seq")
            ]

        readers = [functools.partial(davis_data.read_video, self.root, s, self.year) for s in self.sequences]
        per_object = {}
        for objects in video_shards.map_videos(readers, segment_and_score):
            per_object.update(objects)
        scores = summarize(per_object)
        if jax.process_index() == 0:
            write_csvs(scores, output, self.subset)
            (output / "results.json").write_text(json.dumps(scores.as_dict(), indent=2))
            print(format_table(scores, self.subset))
        return scores.global_scores


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("davis_root", None, "The DAVIS folder (holding JPEGImages, Annotations, ImageSets).")
    flags.DEFINE_string("results", None, "Results folder of <sequence>/<frame>.png; the CSVs are written here.")
    flags.DEFINE_enum("year", "2017", list(davis_data.YEARS), "DAVIS edition: 2017 palette masks or 2016 grey masks.")
    flags.DEFINE_string("set", "val", "Split: ImageSets/<year>/<set>.txt lists its sequences.")
    flags.DEFINE_string("json", None, "Also write the full-precision scores as JSON to this path.")
    flags.mark_flags_as_required(["davis_root", "results"])

    def _run(argv: list[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        flag_values = flags.FLAGS
        main(flag_values.davis_root, flag_values.results, flag_values.year, flag_values.set, flag_values.json)

    app.run(_run)
