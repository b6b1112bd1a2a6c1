"""TAP-Vid point tracking by label propagation, query-first, scored as TAP-Vid defines it.

Each video is resized to 256x256 (`tapvid_data`) and encoded once. The points that share a query
frame become Gaussian heatmaps there (`heatmaps.py`, as JHMDB's joints) and are propagated as
soft labels from that frame on by the benchmark's `propagation.Propagator`, as if the video began
there. In every later frame a point's position is decoded from its propagated heatmap, and its
match confidence is the cosine similarity between its features at the query and the frame's
features at the decoded position: the point is predicted occluded where the confidence is below
`tapvid_occlusion_threshold` (docs/method.md, 'Benchmarks'). The `copy` floor keeps every point
at its query position, visible.
"""

import os
from typing import Iterator, Mapping, NamedTuple

import jax
import numpy as np
import tqdm

from mer_jax.evaluation import (
    background,
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
from mer_jax.evaluation.benchmarks.tapvid import data as tapvid_data
from mer_jax.evaluation.benchmarks.tapvid import metrics as tapvid_metrics
from mer_jax.evaluation.field_errors import FieldError
from mer_jax.models import encoder as encoder_lib

STRIDE = encoder_lib.OUTPUT_STRIDE
PREDICTIONS = "tapvid_predictions.npz"  # "<video>/tracks" [N, T, 2], "<video>/occluded" [N, T], in output_dir.


class Prediction(NamedTuple):
    """Predicted tracks of one video's points.

    Attributes:
      tracks: [N, T, 2] float32 (x, y) raster coordinates (the query position up to the query frame).
      occluded: [N, T] bool (True before the query frame, False at it).
      confidence: [N, T] float32, the match confidence: the cosine similarity of the point's
        features at the query and at the predicted position (1 up to the query frame).
    """

    tracks: np.ndarray
    occluded: np.ndarray
    confidence: np.ndarray


def stay_in_place(video: tapvid_data.TrackedVideo) -> Prediction:
    """The `copy` floor: every point held at its query position, visible from its query frame on."""
    num_points, num_frames = video.occluded.shape
    points = np.arange(num_points)
    query_xy = video.tracks[points, video.query_frames]  # [N, 2]
    tracks = np.repeat(query_xy[:, None], num_frames, axis=1)
    occluded = np.arange(num_frames)[None, :] < video.query_frames[:, None]
    return Prediction(tracks, occluded, np.ones((num_points, num_frames), np.float32))


def track_points(
    features: jax.Array,
    queries: jax.Array | None,
    propagator: propagation.Propagator,
    video: tapvid_data.TrackedVideo,
    *,
    sigma: float,
    topk: int,
    occlusion_threshold: float,
) -> Prediction:
    """Tracks a video's points through cached features by label propagation.

    Args:
      features: [T, h, w, C] the frames' features (the references' side of every affinity).
      queries: [T, h, w, C] VEN-refined query features, or None (the features themselves).
      propagator: the protocol's propagator.
      video: frames [T, S, S, 3], query frames and ground-truth tracks (only each point's query
        position is read).
      sigma: Gaussian sigma (feature cells) of the query heatmaps.
      topk: a position is decoded from the mean of its heatmap's topk largest values.
      occlusion_threshold: a point is predicted occluded where its match confidence is below this.
    """
    prediction = stay_in_place(video)
    tracks, confidence = prediction.tracks.copy(), prediction.confidence.copy()
    height, width = video.frames.shape[1:3]
    keys = np.asarray(features)
    stride = propagator.preset.stride  # the encoder's (`protocol.check_stride`)
    for start in np.unique(video.query_frames):
        group = np.flatnonzero(video.query_frames == start)
        pixels = video.tracks[group, start] - 0.5  # raster -> pixel-centre coordinates
        first = heatmaps.points_to_heatmaps(pixels, np.ones(len(group), bool), height, width, stride, sigma)
        query_features = heatmaps.sample_features(keys[start], pixels, stride)  # [n, C]
        seeds = {int(start): (first, np.ones(first.shape[:2], bool))}
        for t, soft in propagator(features, video.frames, seeds, queries=queries):
            if t == start:
                continue
            found = heatmaps.heatmaps_to_points(np.asarray(soft), height, width, stride, topk)
            tracks[group, t] = found + 0.5
            confidence[group, t] = _cosine(query_features, heatmaps.sample_features(keys[t], found, stride))
    occluded = prediction.occluded | (confidence < occlusion_threshold)
    return Prediction(tracks, occluded, confidence)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of [N, C] arrays (0 where a row is all zeros)."""
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.where(norms > 0, np.sum(a * b, axis=-1) / np.where(norms > 0, norms, 1.0), 0.0)


class Evaluator:
    """TAP-Vid metrics (Average Jaccard, position accuracy, occlusion accuracy) per video and overall.

    Args:
      tapvid_path: a TAP-Vid pickle (tapvid_davis.pkl) or a folder of them (the Kinetics shards).
      tapvid_size: the side the frames are resized to (the protocol's 256).
      tapvid_sigma: Gaussian sigma (feature cells) of the query points' heatmaps.
      tapvid_topk: a point is decoded from the mean of its heatmap's topk largest values.
      tapvid_occlusion_threshold: predicted occluded where the match confidence (cosine similarity
        of the point's features at the query and at the predicted position) is below this.
      sequences: comma-separated videos to run (None: all).
      save_overlays: also write `<output>/overlays/<video>.mp4` (predicted points drawn: filled
        where predicted visible, a ring where predicted occluded).
    """

    # The numbers its comparison table shows.
    HEADLINE_KEYS = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")

    def __init__(
        self,
        *,
        tapvid_path: str | None,
        tapvid_size: int,
        tapvid_sigma: float,
        tapvid_topk: int,
        tapvid_occlusion_threshold: float,
        sequences: str | None,
        save_overlays: bool,
    ):
        if tapvid_path is None:
            raise FieldError("tapvid_path", "set {flag}=PATH (tapvid_davis.pkl, or the folder of Kinetics pickles)")
        tapvid_data.list_pickles(tapvid_path)  # Fails here, before a model is loaded.
        if tapvid_size % STRIDE:
            raise FieldError(
                "tapvid_size", f"{{flag}} must be a multiple of the encoder stride {STRIDE}, got {tapvid_size}"
            )
        self.path, self.size = tapvid_path, tapvid_size
        self.sigma, self.topk, self.threshold = tapvid_sigma, tapvid_topk, tapvid_occlusion_threshold
        self.names = None if sequences is None else sequences.split(",")
        self.save_overlays = save_overlays

    def run(self, encoder: vos.FrameEncoder | vos.CopyFirstFrame, preset: protocol.Preset, output_dir: str) -> dict:
        """Tracks every video; writes tapvid_results.json, tapvid_predictions.npz (and overlays);
        returns the overall metrics (tapvid_metrics.KEYS), `videos`, `points` and `per_video`.

        The videos are split over the run's devices and processes (`video_shards`), each process
        writing its own videos' overlays; process 0 writes the JSON, the predictions
        ("<video>/tracks" [N, T, 2], "<video>/occluded" [N, T]) and prints the table.
        """
        propagator = propagation.Propagator(preset)

        def track(share: video_shards.Share, videos: Iterator[tapvid_data.TrackedVideo]) -> Iterator[tuple]:
            for video in tqdm.tqdm(background.prefetch(videos), desc="TAP-Vid videos" + share.label, unit="video"):
                if isinstance(encoder, vos.CopyFirstFrame):
                    prediction = stay_in_place(video)
                else:
                    features, queries = vos.keys_and_queries(encoder(video.frames))
                    prediction = track_points(
                        features,
                        queries,
                        propagator,
                        video,
                        sigma=self.sigma,
                        topk=self.topk,
                        occlusion_threshold=self.threshold,
                    )
                metrics = tapvid_metrics.video_metrics(
                    video.query_frames, video.occluded, video.tracks, prediction.occluded, prediction.tracks
                )
                if self.save_overlays:
                    write_overlay(os.path.join(output_dir, "overlays", f"{video.name}.mp4"), video, prediction)
                yield video.name, metrics, len(video.query_frames), prediction

        readers = tapvid_data.video_readers(self.path, self.size, self.names)
        tracked = video_shards.map_videos(readers, track)
        per_video = {name: metrics for name, metrics, _, _ in tracked}
        scores = {
            **tapvid_metrics.mean_over_videos(list(per_video.values())),
            "videos": len(per_video),
            "points": sum(points for _, _, points, _ in tracked),
            "per_video": per_video,
        }
        if jax.process_index() == 0:
            reports.write_json(os.path.join(output_dir, "tapvid_results.json"), scores)
            arrays = {f"{name}/{key}": getattr(p, key) for name, _, _, p in tracked for key in ("tracks", "occluded")}
            np.savez(os.path.join(output_dir, PREDICTIONS), **arrays)
            print(format_table(scores))
        return scores

    def report_page(self, columns: Mapping[str, dict], output_dir: str) -> report_html.Page:
        """The HTML report's page (`report_html.py`) of `columns` {name: `run`'s scores}, the model
        first, then the floors: one row per video (AJ, <d_avg, OA), one strip per video with the
        model's predicted points (output_dir's PREDICTIONS), the worst frame by Average Jaccard."""
        path = os.path.join(output_dir, PREDICTIONS)
        predictions = dict(np.load(path)) if os.path.isfile(path) else {}
        names = list(next(iter(columns.values()))["per_video"])
        strips = []
        for read in tapvid_data.video_readers(self.path, self.size, names):
            video = read()
            if f"{video.name}/tracks" not in predictions:
                strips.append(report_html.Strip(video.name, note=f"no thumbnails: no tracks of {video.name} in {path}"))
                continue
            tracks, occluded = predictions[f"{video.name}/tracks"], predictions[f"{video.name}/occluded"]
            pictures = []
            for t, caption in thumbnails.pick_frames(frame_jaccard(video, tracks, occluded), "AJ"):
                shown = video.query_frames <= t  # As the overlay videos: each point from its query frame on.
                points = tracks[shown, t] - 0.5  # raster -> pixel-centre coordinates
                image = thumbnails.points_thumbnail(
                    video.frames[t], points, ~occluded[shown, t], np.flatnonzero(shown), caption
                )
                pictures.append(image)
            strips.append(report_html.Strip(video.name, tuple(pictures)))
        return report_html.Page(
            title=f"TAP-Vid {os.path.basename(os.path.normpath(self.path))} ({self.size}x{self.size})",
            columns=columns,
            headline_keys=self.HEADLINE_KEYS,
            row_label="video",
            metrics=self.HEADLINE_KEYS,
            rows=report_html.rows_of(columns, "per_video"),
            strips=tuple(strips),
        )


def frame_jaccard(video: tapvid_data.TrackedVideo, tracks: np.ndarray, occluded: np.ndarray) -> np.ndarray:
    """Each frame's Average Jaccard: `tapvid_metrics.video_metrics` of that frame's (point, frame)
    pairs alone, those of the points queried before it (query-first scoring).

    Args:
      video: the ground truth (query frames [N], tracks [N, T, 2], occluded [N, T]).
      tracks: [N, T, 2] predicted (x, y) raster coordinates.
      occluded: [N, T] predicted occlusion.

    Returns:
      [T] float64, NaN where no pair is scored (no point queried before the frame, or the Jaccard
      undefined).
    """
    per_frame = np.full(video.occluded.shape[1], np.nan)
    for t in range(len(per_frame)):
        # On the one-frame slice, query -1 scores a point's pair and 0 leaves it out.
        queries = np.where(video.query_frames < t, -1, 0)
        frame = slice(t, t + 1)
        metrics = tapvid_metrics.video_metrics(
            queries, video.occluded[:, frame], video.tracks[:, frame], occluded[:, frame], tracks[:, frame]
        )
        per_frame[t] = metrics["average_jaccard"]
    return per_frame


def write_overlay(path: str, video: tapvid_data.TrackedVideo, prediction: Prediction) -> None:
    """An MP4 of the frames with each point's predicted position from its query frame on."""
    height, width = video.frames.shape[1:3]
    writer = overlays.OverlayWriter(path, height, width)
    for t, frame in enumerate(video.frames):
        shown = video.query_frames <= t
        points = prediction.tracks[shown, t] - 0.5  # raster -> pixel-centre coordinates
        writer.add_points(frame, points, ~prediction.occluded[shown, t], np.flatnonzero(shown))
    writer.close()


def format_table(scores: dict) -> str:
    """Average Jaccard, position accuracy and occlusion accuracy per video and their mean, as a text table."""
    rows = {**scores["per_video"], "mean": scores}
    return reports.comparison_table(rows, tapvid_metrics.KEYS[:3])
