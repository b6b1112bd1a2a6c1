"""J&F of label propagation on held-out procedural videos (the demo's check during training).

Every object visible in a video's first frame is propagated from its first-frame mask by the VOS
loop (`vos.py`); the scores use the DAVIS definitions (`davis_metrics`), with objects that are
absent from the first frame removed from the ground truth. Encoders that fuse flow get the
videos' exact flow (docs/method.md, 'Benchmarks').
"""

import math
import os
from typing import Mapping

import jax
import numpy as np

from mer_jax.data import synthetic_video
from mer_jax.evaluation import protocol, report_html, reports, vos
from mer_jax.evaluation.benchmarks.davis import metrics as davis_metrics
from mer_jax.evaluation.field_errors import FieldError


def to_video(index: int, video: synthetic_video.SyntheticVideo) -> vos.Video | None:
    """The VOS video of a procedural one (None when its first frame shows no object)."""
    object_ids = [int(i) for i in np.unique(video.masks[0]) if i != 0]
    if not object_ids:
        return None
    names = [f"{t:05d}" for t in range(len(video.frames))]
    return vos.Video(f"{index:05d}", video.frames, {0: video.masks[0]}, object_ids, names, flow=video.flow)


def evaluate(
    encoder: vos.FrameEncoder | vos.CopyFirstFrame,
    preset: protocol.Preset,
    videos: list[synthetic_video.SyntheticVideo],
) -> dict:
    """Object-weighted scores over the videos.

    Returns:
      {"J&F-Mean", "J-Mean", "F-Mean": float, "objects": int, "per_object": {"<video>_<object
      id>": J&F of that object}}; the per-object keys are the same for every encoder on the same
      videos (for paired differences).
    """
    pairs = [(to_video(i, video), video.masks) for i, video in enumerate(videos)]
    pairs = [(video, truth) for video, truth in pairs if video is not None]
    segmented = vos.segment_videos([video for video, _ in pairs], encoder, preset, desc="held-out videos")
    j_means, f_means, per_object = [], [], {}
    for (video, predicted), (_, truth) in zip(segmented, pairs):
        # Ids in label-channel order: objects absent from frame 0 become background.
        lookup = np.zeros(256, np.uint8)
        lookup[video.object_ids] = np.arange(1, len(video.object_ids) + 1)
        frames = davis_metrics.evaluate_sequence(lookup[truth], lookup[predicted], None, len(video.object_ids))
        for k, object_id in enumerate(video.object_ids):
            j_means.append(davis_metrics.statistics(frames["J"][k])[0])
            f_means.append(davis_metrics.statistics(frames["F"][k])[0])
            per_object[f"{video.name}_{object_id}"] = (j_means[-1] + f_means[-1]) / 2
    j_mean, f_mean = float(np.mean(j_means)), float(np.mean(f_means))
    return {
        "J&F-Mean": (j_mean + f_mean) / 2, "J-Mean": j_mean, "F-Mean": f_mean, "objects": len(j_means),
        "per_object": per_object,
    }  # fmt: skip


class Evaluator:
    """J&F on held-out procedural videos (`evaluate`), written to `<output>/synthetic_results.json`.

    Args:
      num_videos, num_frames, num_objects: the held-out videos (`synthetic_video.generate_videos`).
      seed: their seed (distinct from a training seed: held out).
      image_size: their square side in pixels.
      flow_gap: their flow points to the frame this many before.
      kind: their generator, 'easy' or 'camouflage' (docs/synthetic.md).
      During training, image_size, flow_gap and kind left None take the training data's values
      (`from_training_data`).
    """

    HEADLINE_KEYS = ("J&F-Mean", "J-Mean", "F-Mean")  # The numbers its comparison table shows.

    def __init__(
        self,
        *,
        num_videos: int,
        num_frames: int,
        num_objects: int,
        seed: int,
        image_size: int | None,
        flow_gap: int | None,
        kind: str | None,
    ):
        for field, value in (("image_size", image_size), ("flow_gap", flow_gap), ("kind", kind)):
            if value is None:
                raise FieldError(field, "set {flag} (the held-out videos' " + field + ")")
        self.num_videos, self.num_frames, self.num_objects, self.seed = num_videos, num_frames, num_objects, seed
        self.image_size, self.flow_gap, self.kind = image_size, flow_gap, kind
        self._videos: list[synthetic_video.SyntheticVideo] | None = None

    @staticmethod
    def from_training_data(fields: dict, data) -> dict:
        """`fields` with image_size, flow_gap and kind None replaced by the training data's
        (`config.data`: image_size, flow_gap, synthetic.kind)."""
        training = {"image_size": data.image_size, "flow_gap": data.flow_gap, "kind": data.synthetic.kind}
        return {key: training[key] if key in training and value is None else value for key, value in fields.items()}

    def check_preset(self, preset: protocol.Preset) -> None:
        """Refuses a window wider than a quarter of the feature grid's side: a global search."""
        grid = math.ceil(self.image_size / preset.stride)
        if 4 * preset.radius > grid:
            raise FieldError(
                "preset",
                f"{{flag}} has radius {preset.radius}: a global search on the {grid}x{grid} feature grid of "
                f"{self.image_size}x{self.image_size} frames. Use a preset whose radius is at most {grid // 4} (a "
                "quarter of the grid side), e.g. {flag}=mer_small.",
            )

    def description(self) -> dict:
        """What a summary says about the videos: {"kind", "videos"}."""
        return {"kind": self.kind, "videos": len(self.videos())}

    def videos(self) -> list[synthetic_video.SyntheticVideo]:
        """The held-out videos (generated at the first call)."""
        if self._videos is None:
            self._videos = synthetic_video.generate_videos(
                self.seed, self.num_videos, num_frames=self.num_frames, height=self.image_size,
                width=self.image_size, num_objects=self.num_objects, flow_gap=self.flow_gap, kind=self.kind,
            )  # fmt: skip
        return self._videos

    def run(self, encoder: vos.FrameEncoder | vos.CopyFirstFrame, preset: protocol.Preset, output_dir: str) -> dict:
        """Scores every video (on every process: no collective); process 0 writes
        synthetic_results.json. Returns `evaluate`'s scores."""
        scores = evaluate(encoder, preset, self.videos())
        if jax.process_index() == 0:
            reports.write_json(os.path.join(output_dir, "synthetic_results.json"), scores)
        return scores

    def report_page(self, columns: Mapping[str, dict], output_dir: str) -> report_html.Page:
        """The HTML report's page (`report_html.py`) of `columns` {name: `run`'s scores}, the model
        first, then the floors: one row per object (J&F) and no thumbnails (no mask is written)."""
        del output_dir  # Nothing is read back: the videos are generated in memory.
        return report_html.Page(
            title=f"{len(self.videos())} held-out procedural videos ({self.kind}, {self.image_size}x{self.image_size})",
            columns=columns,
            headline_keys=self.HEADLINE_KEYS,
            row_label="object",
            metrics=("J&F",),
            rows=report_html.rows_of(columns, "per_object", "J&F"),
            notes=("No thumbnails: the held-out videos are generated in memory and their masks are not written.",),
        )
