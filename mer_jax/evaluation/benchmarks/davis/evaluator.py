"""DAVIS semi-supervised evaluation: each sequence's first-frame annotation propagated by the VOS
loop (`vos.py`), the results written as the official toolkit reads them and scored with its
semantics (`scoring.py`; docs/method.md, 'Benchmarks')."""

import functools
import json
import pathlib
from typing import Iterator, Mapping

import jax
import numpy as np
import tqdm

from mer_jax.data import frames_io
from mer_jax.evaluation import background, protocol, report_html, thumbnails, video_shards, vos
from mer_jax.evaluation.benchmarks.davis import data as davis_data
from mer_jax.evaluation.benchmarks.davis import metrics as davis_metrics
from mer_jax.evaluation.benchmarks.davis.scoring import format_table, score_sequence, summarize, write_csvs
from mer_jax.evaluation.field_errors import FieldError


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

    HEADLINE_KEYS = ("J&F-Mean", "J-Mean", "F-Mean")  # The numbers its comparison table shows.

    def __init__(self, *, davis_root: str | None, year: str, subset: str, sequences: str | None, save_overlays: bool):
        if davis_root is None:
            raise FieldError(
                "davis_root", "set {flag}=PATH/DAVIS (the DAVIS folder with JPEGImages/, Annotations/, ImageSets/)"
            )
        if year not in davis_data.YEARS:
            raise FieldError("year", f"{{flag}} must be one of {davis_data.YEARS}, got {year!r}")
        self.root = pathlib.Path(davis_root).expanduser()
        self.year, self.subset, self.save_overlays = year, subset, save_overlays
        self.sequences = davis_data.read_sequence_list(self.root, year, subset)
        if sequences is not None:
            wanted = sequences.split(",")
            unknown = sorted(set(wanted) - set(self.sequences))
            if unknown:
                raise FieldError("sequences", f"{{flag}}: {unknown} are not in ImageSets/{year}/{subset}.txt")
            self.sequences = wanted

    def description(self) -> dict:
        """What a summary says about the sequences: {"kind": "DAVIS-<year> <subset>", "videos"}."""
        return {"kind": f"DAVIS-{self.year} {self.subset}", "videos": len(self.sequences)}

    def run(self, encoder: vos.FrameEncoder, preset: protocol.Preset, output_dir: str) -> dict:
        """Writes the results, the CSVs and results.json into output_dir; returns the scores.

        The sequences are split over the run's devices and processes (`video_shards`): each
        process writes and scores its own sequences' masks; process 0 writes the CSVs and
        results.json and prints the table. Every process returns the global scores (GLOBAL_KEYS),
        "objects" and "per_object" {"<sequence>_<object id>": (J-Mean + F-Mean) / 2}, the form
        `sweep_report` pairs objects by.
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
        per_object_jf = {name: (values["J-Mean"] + values["F-Mean"]) / 2 for name, values in scores.per_object.items()}
        return {**scores.global_scores, "objects": len(per_object_jf), "per_object": per_object_jf}

    def report_page(self, columns: Mapping[str, dict], output_dir: str) -> report_html.Page:
        """The HTML report's page (`report_html.py`) of `columns` {name: `run`'s scores}, the model
        first, then the floors: one row per object (J&F), one strip per sequence read back from the
        model's masks in output_dir."""
        return report_html.Page(
            title=self.description()["kind"],
            columns=columns,
            headline_keys=self.HEADLINE_KEYS,
            row_label="object",
            metrics=("J&F",),
            rows=report_html.rows_of(columns, "per_object", "J&F"),
            strips=tuple(self._strip(pathlib.Path(output_dir), sequence) for sequence in self.sequences),
        )

    def _strip(self, output: pathlib.Path, sequence: str) -> report_html.Strip:
        """A sequence's thumbnails: its written masks over the frames, the worst frame by J."""
        try:
            truth, _, names = davis_data.read_ground_truth(self.root, sequence, self.year)
            masks = davis_data.read_results(output, sequence, names, truth.shape[1:], binary=self.year == "2016")
            files = davis_data.frame_files(self.root, sequence)
        except FileNotFoundError as error:  # Written by another process, to a folder this one does not see.
            return report_html.Strip(sequence, note=f"no thumbnails: {error}")
        pictures = [
            thumbnails.mask_thumbnail(frames_io.read_frame(str(files[names[t]])), masks[t], caption)
            for t, caption in thumbnails.pick_frames(frame_jaccard(truth, masks), "J")
        ]
        return report_html.Strip(sequence, tuple(pictures))


def frame_jaccard(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each frame's J, the mean over the objects 1..N (N the largest id of truth[0]) of
    `davis_metrics.jaccard`, for the frames the benchmark scores (all but the first and last).

    Args:
      truth: [T, H, W] ground-truth ids.
      predicted: [T, H, W] predicted ids.

    Returns:
      [T] float64, NaN at the first and last frames (and everywhere when truth[0] has no object).
    """
    per_frame = np.full(len(truth), np.nan)
    objects = range(1, int(truth[0].max()) + 1)
    if len(truth) > 2 and objects:
        per_frame[1:-1] = np.mean([davis_metrics.jaccard(truth[1:-1] == k, predicted[1:-1] == k) for k in objects], 0)
    return per_frame
