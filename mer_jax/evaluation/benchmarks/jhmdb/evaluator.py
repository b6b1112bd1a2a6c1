"""JHMDB pose propagation benchmark: propagate the 15 joints of frame 0, report PCK.

The joints become Gaussian heatmaps on the feature grid (`heatmaps.py`), propagated as soft labels
by the same encoder and `propagation.Propagator` as the VOS benchmarks (docs/method.md,
'Benchmarks'), and decoded back to joints in every frame.
"""

import functools
import os
from typing import Iterator, Mapping

import jax
import numpy as np
import tqdm

from mer_jax.evaluation import (
    heatmaps,
    overlays,
    propagation,
    protocol,
    report_html,
    reports,
    thumbnails,
    video_shards,
    vos,
)
from mer_jax.evaluation.benchmarks.jhmdb import data as jhmdb_data
from mer_jax.evaluation.benchmarks.jhmdb import pck
from mer_jax.evaluation.field_errors import FieldError

PREDICTIONS = "jhmdb_predictions.npz"  # {"<class>/<video>": predicted joints [T, 15, 2]}, in output_dir.

NamedVideo = tuple[str, str, jhmdb_data.JhmdbVideo]  # (class, video name, the video)


def _read_named_video(root: str, cls: str, name: str) -> NamedVideo:
    """The test video `cls`/`name` with its class and name (for its overlay's file name)."""
    return cls, name, jhmdb_data.read_video(root, cls, name)


class Evaluator:
    """PCK@0.1/0.2 per joint and mean on one split's test videos.

    Args:
      jhmdb_root: the JHMDB folder (Rename_Images/, joint_positions/, splits/).
      jhmdb_split: the official split (1, 2 or 3).
      jhmdb_sigma: Gaussian sigma (feature cells) of the first frame's joint heatmaps.
      jhmdb_topk: joints are decoded from the mean of their heatmap's topk largest values.
      sequences: comma-separated videos to run (None: all); other names are ignored.
      save_overlays: also write `<output>/overlays/<class>_<video>.mp4`.
    """

    HEADLINE_KEYS = ("PCK@0.1", "PCK@0.2")  # The numbers its comparison table shows.

    def __init__(
        self,
        *,
        jhmdb_root: str | None,
        jhmdb_split: int,
        jhmdb_sigma: float,
        jhmdb_topk: int,
        sequences: str | None,
        save_overlays: bool,
    ):
        if jhmdb_root is None:
            raise FieldError(
                "jhmdb_root", "set {flag}=PATH (the folder holding Rename_Images/, joint_positions/, splits/)"
            )
        self.root = os.path.expanduser(jhmdb_root)
        self.videos = jhmdb_data.list_test_videos(self.root, jhmdb_split)
        if sequences is not None:
            wanted = set(sequences.split(","))
            self.videos = [v for v in self.videos if v[1] in wanted]
        self.split, self.sigma, self.topk, self.save_overlays = jhmdb_split, jhmdb_sigma, jhmdb_topk, save_overlays

    def run(self, encoder: vos.FrameEncoder, preset: protocol.Preset, output_dir: str) -> dict:
        """Propagates every video; writes jhmdb_results.json, jhmdb_predictions.npz (and overlays);
        returns the PCK dict, with "per_video" {"<class>/<video>": {"PCK@0.1", "PCK@0.2"}}.

        The videos are split over the run's devices and processes (`video_shards`), each process
        writing its own videos' overlays; PCK pools every video's frames in the split's order,
        and process 0 writes the JSON, the predicted joints {"<class>/<video>": [T, 15, 2]} and
        prints the table.
        """
        propagator = propagation.Propagator(preset)

        def track(share: video_shards.Share, videos: Iterator[NamedVideo]) -> Iterator[tuple]:
            for cls, name, video in tqdm.tqdm(videos, desc="jhmdb videos" + share.label):
                predicted = self._track(encoder, propagator, name, video)
                if self.save_overlays:
                    height, width = video.frames.shape[1:3]
                    writer = overlays.OverlayWriter(
                        os.path.join(output_dir, "overlays", f"{cls}_{name}.mp4"), height, width
                    )
                    for frame, joints in zip(video.frames, predicted):
                        writer.add_joints(frame, joints)
                    writer.close()
                yield f"{cls}/{name}", (predicted, video.joints, video.visible)

        readers = [functools.partial(_read_named_video, self.root, cls, name) for cls, name in self.videos]
        tracked = dict(video_shards.map_videos(readers, track))
        scores = pck.pck_for_videos(list(tracked.values()))
        scores["per_video"] = {name: _headline(pck.pck_for_videos([video])) for name, video in tracked.items()}
        if jax.process_index() == 0:
            reports.write_json(os.path.join(output_dir, "jhmdb_results.json"), scores)
            np.savez(os.path.join(output_dir, PREDICTIONS), **{name: video[0] for name, video in tracked.items()})
            print(format_table(scores))
        return scores

    def report_page(self, columns: Mapping[str, dict], output_dir: str) -> report_html.Page:
        """The HTML report's page (`report_html.py`) of `columns` {name: `run`'s scores}, the model
        first, then the floors: one row per video (PCK@0.1, PCK@0.2), one strip per video with the
        model's predicted joints (output_dir's PREDICTIONS), the worst frame by PCK@0.1."""
        path = os.path.join(output_dir, PREDICTIONS)
        predictions = dict(np.load(path)) if os.path.isfile(path) else {}
        strips = []
        for cls, name in self.videos:
            key = f"{cls}/{name}"
            if key not in predictions:
                strips.append(report_html.Strip(key, note=f"no thumbnails: no joints of {key} in {path}"))
                continue
            video, predicted = jhmdb_data.read_video(self.root, cls, name), predictions[key]
            pictures = [
                thumbnails.joints_thumbnail(video.frames[t], predicted[t], caption)
                for t, caption in thumbnails.pick_frames(frame_pck(predicted, video.joints, video.visible), "PCK@0.1")
            ]
            strips.append(report_html.Strip(key, tuple(pictures)))
        return report_html.Page(
            title=f"JHMDB split {self.split} test",
            columns=columns,
            headline_keys=self.HEADLINE_KEYS,
            row_label="video",
            metrics=self.HEADLINE_KEYS,
            rows=report_html.rows_of(columns, "per_video"),
            strips=tuple(strips),
        )

    def _track(
        self,
        encoder: vos.FrameEncoder | vos.CopyFirstFrame,
        propagator: propagation.Propagator,
        name: str,
        video: jhmdb_data.JhmdbVideo,
    ) -> np.ndarray:
        """The predicted joints [T, 15, 2] of one video (frame 0 its annotation; the copy floor
        holds them still)."""
        num_frames, height, width = video.frames.shape[:3]
        predicted = np.repeat(video.joints[:1].astype(np.float32), num_frames, axis=0)
        if isinstance(encoder, vos.CopyFirstFrame):
            return predicted
        keys, queries = vos.keys_and_queries(encoder(video.frames))
        stride = propagator.preset.stride  # the encoder's (`protocol.check_stride`)
        first = heatmaps.points_to_heatmaps(
            video.joints[0], video.visible[0], height, width, stride=stride, sigma=self.sigma
        )
        seeds = {0: (first, np.ones(first.shape[:2], bool))}
        with tqdm.tqdm(total=num_frames, desc=name, leave=False) as bar:
            for t, soft in propagator(keys, video.frames, seeds, bar, queries=queries):
                predicted[t] = heatmaps.heatmaps_to_points(np.asarray(soft), height, width, stride, self.topk)
        predicted[0] = video.joints[0]
        return predicted


def frame_pck(predicted: np.ndarray, joints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Each frame's PCK@0.1 (`pck.pck` of that frame alone) from predicted and ground-truth joints
    [T, 15, 2] and visibility [T, 15]: [T] float64, NaN at frame 0 (given, not scored) and where
    fewer than 2 joints are visible."""
    per_frame = np.full(len(predicted), np.nan)
    for t in range(1, len(predicted)):
        per_frame[t] = pck.pck(predicted[t : t + 1], joints[t : t + 1], visible[t : t + 1])["PCK@0.1"]
    return per_frame


def _headline(scores: dict) -> dict[str, float]:
    """A PCK dict's numbers without its per-joint arrays."""
    return {key: value for key, value in scores.items() if key != "per_joint"}


def format_table(scores: dict) -> str:
    """PCK per joint and mean as a text table."""
    lines = [f"{'joint':16s} {'PCK@0.1':>8s} {'PCK@0.2':>8s}"]
    for j, name in enumerate(pck.JOINT_NAMES):
        lines.append(f"{name:16s} {scores['per_joint']['PCK@0.1'][j]:8.4f} {scores['per_joint']['PCK@0.2'][j]:8.4f}")
    lines.append(f"{'mean':16s} {scores['PCK@0.1']:8.4f} {scores['PCK@0.2']:8.4f}")
    return "\n".join(lines)
