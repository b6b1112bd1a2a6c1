"""DAVIS semi-supervised evaluation: each sequence's first-frame annotation propagated by the VOS
loop (`vos.py`), the results written as the official toolkit reads them and scored with its
semantics (`scoring.py`; docs/method.md, 'Benchmarks')."""

import functools
import json
import pathlib
from typing import Iterator

import jax
import tqdm

from mer_jax.evaluation import background, protocol, video_shards, vos
from mer_jax.evaluation.benchmarks.davis import data as davis_data
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
