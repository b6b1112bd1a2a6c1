"""JHMDB pose propagation benchmark: propagate the 15 joints of frame 0, report PCK.

The joints become Gaussian heatmaps on the feature grid (`heatmaps.py`), propagated as soft labels
by the same encoder and `propagation.Propagator` as the VOS benchmarks (docs/method.md,
'Benchmarks'), and decoded back to joints in every frame.
"""

import functools
import os
from typing import Iterator

import jax
import numpy as np
import tqdm

from mer_jax.evaluation import heatmaps, overlays, propagation, protocol, reports, video_shards, vos
from mer_jax.evaluation.benchmarks.jhmdb import data as jhmdb_data
from mer_jax.evaluation.benchmarks.jhmdb import pck
from mer_jax.evaluation.field_errors import FieldError
from mer_jax.models import encoder as encoder_lib

STRIDE = encoder_lib.OUTPUT_STRIDE

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
        self.sigma, self.topk, self.save_overlays = jhmdb_sigma, jhmdb_topk, save_overlays

    def run(self, encoder: vos.FrameEncoder, preset: protocol.Preset, output_dir: str) -> dict:
        """Propagates every video; writes jhmdb_results.json (and overlays); returns the PCK dict.

        The videos are split over the run's devices and processes (`video_shards`), each process
        writing its own videos' overlays; PCK pools every video's frames in the split's order,
        and process 0 writes the JSON and prints the table.
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
                yield predicted, video.joints, video.visible

        readers = [functools.partial(_read_named_video, self.root, cls, name) for cls, name in self.videos]
        scores = pck.pck_for_videos(video_shards.map_videos(readers, track))
        if jax.process_index() == 0:
            reports.write_json(os.path.join(output_dir, "jhmdb_results.json"), scores)
            print(format_table(scores))
        return scores

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
        first = heatmaps.points_to_heatmaps(
            video.joints[0], video.visible[0], height, width, stride=STRIDE, sigma=self.sigma
        )
        seeds = {0: (first, np.ones(first.shape[:2], bool))}
        with tqdm.tqdm(total=num_frames, desc=name, leave=False) as bar:
            for t, soft in propagator(keys, video.frames, seeds, bar, queries=queries):
                predicted[t] = heatmaps.heatmaps_to_points(np.asarray(soft), height, width, STRIDE, self.topk)
        predicted[0] = video.joints[0]
        return predicted


def format_table(scores: dict) -> str:
    """PCK per joint and mean as a text table."""
    lines = [f"{'joint':16s} {'PCK@0.1':>8s} {'PCK@0.2':>8s}"]
    for j, name in enumerate(pck.JOINT_NAMES):
        lines.append(f"{name:16s} {scores['per_joint']['PCK@0.1'][j]:8.4f} {scores['per_joint']['PCK@0.2'][j]:8.4f}")
    lines.append(f"{'mean':16s} {scores['PCK@0.1']:8.4f} {scores['PCK@0.2']:8.4f}")
    return "\n".join(lines)
