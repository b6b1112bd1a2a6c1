"""TAP-Vid tracking: points held by distinct features on a still video, tracking through exact
procedural motion beats staying in place, and the evaluator end to end with its floors."""

import json

import ml_collections
import numpy as np
import pytest

from configs import propagation as propagation_configs
from configs import tapvid as tapvid_config
from mer_jax import evaluate
from mer_jax.data import synthetic_tracks, synthetic_video
from mer_jax.evaluation import propagation, protocol
from mer_jax.evaluation.benchmarks.tapvid import data as tapvid_data
from mer_jax.evaluation.benchmarks.tapvid import evaluator as tapvid
from mer_jax.evaluation.benchmarks.tapvid import metrics as tapvid_metrics

SIZE, FRAMES = 64, 12


def crw_small(encoder="trained"):
    return protocol.make_preset(propagation_configs.presets()["crw_small"], encoder, 0.05)


class SurfaceEncoder:
    """Features naming the surface point each feature cell's centre sees in a procedural video:
    random Fourier features of its canonical coordinates on its layer (frequencies per layer), so
    a point keeps its features while it moves, as an ideal encoder's would."""

    def __init__(self, layers, dims=16, seed=0):
        rng = np.random.default_rng(seed)
        self.layers = layers
        self.frequencies = rng.normal(0.0, 1 / 3, (len(layers), dims, 2))
        self.offsets = rng.uniform(0.0, 2 * np.pi, (len(layers), dims))

    def __call__(self, frames, flow=None):
        rows, cols = np.mgrid[0 : frames.shape[1] // 4, 0 : frames.shape[2] // 4] * 4 + 1.5
        features = []
        for t in range(len(frames)):
            layer, x, y = synthetic_tracks.surface_points(self.layers, np.full(rows.shape, t), cols, rows)
            phase = np.einsum("hwdk,hwk->hwd", self.frequencies[layer], np.stack([x, y], -1)) + self.offsets[layer]
            features.append(np.concatenate([np.cos(phase), np.sin(phase)], -1))
        return np.stack(features).astype(np.float32)


@pytest.fixture(scope="module")
def procedural(tmp_path_factory):
    """Three procedural videos in the TAP-Vid format, read back as the evaluator reads them."""
    path = str(tmp_path_factory.mktemp("tapvid") / "synthetic.pkl")
    examples = synthetic_tracks.tapvid_examples(0, 3, num_points=24, num_frames=FRAMES, height=SIZE, width=SIZE)
    tapvid_data.write_pickle(path, examples)
    return path, list(tapvid_data.read_videos(path, SIZE))


def test_stay_in_place_holds_the_query_position():
    tracks = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    video = tapvid_data.TrackedVideo("v", np.zeros((3, 8, 8, 3), np.uint8), np.array([0, 1]), tracks, None)
    video = video._replace(occluded=np.zeros((2, 3), bool))
    held = tapvid.stay_in_place(video)
    np.testing.assert_array_equal(held.tracks[0], np.repeat(tracks[0, :1], 3, 0))
    np.testing.assert_array_equal(held.tracks[1], np.repeat(tracks[1, 1:2], 3, 0))
    np.testing.assert_array_equal(held.occluded, [[False, False, False], [True, False, False]])


def test_frame_jaccard_scores_each_frame_by_the_points_queried_before_it():
    tracks = np.zeros((2, 4, 2), np.float32)
    occluded = np.zeros((2, 4), bool)
    video = tapvid_data.TrackedVideo("v", np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 2]), tracks, occluded)
    predicted = tracks.copy()
    predicted[0, 1] = [3.0, 0.0]  # 3 px off in frame 1: within 4, 8 and 16 px only
    predicted[1, 3] = [20.0, 0.0]  # point 1, queried at 2, lost in frame 3: a miss at every threshold
    per_frame = tapvid.frame_jaccard(video, predicted, occluded)
    # Frame 0 and frame 2's point 1 are query frames, not scored. Frame 3: point 0 hit (1 TP) and
    # point 1 a false positive and a missed visible point at every threshold: 1 / (2 + 1).
    np.testing.assert_allclose(per_frame, [np.nan, 3 / 5, 1.0, 1 / 3])


def test_distinct_features_hold_every_point_of_a_still_video(procedural):
    _, videos = procedural
    video = videos[0]
    still = video._replace(
        frames=np.repeat(video.frames[:1], FRAMES, 0), tracks=np.repeat(video.tracks[:, :1], FRAMES, 1)
    )
    assert len(np.unique(still.query_frames)) > 1  # several groups of points, each propagated from its frame
    features = np.random.default_rng(0).normal(size=(1, SIZE // 4, SIZE // 4, 32)).astype(np.float32)
    held = tapvid.track_points(
        np.repeat(features, FRAMES, 0), None, propagation.Propagator(crw_small()), still,
        sigma=0.5, topk=3, occlusion_threshold=0.5,
    )  # fmt: skip
    after = np.arange(FRAMES)[None, :] > still.query_frames[:, None]
    error = np.linalg.norm(held.tracks - still.tracks, axis=-1)[after]
    assert np.median(error) < 0.5 and np.percentile(error, 90) < 1.5  # the decoder's sub-cell rounding
    assert held.confidence[after].min() > 0.8  # the features at the decoded position are the query's
    np.testing.assert_array_equal(held.occluded, ~(after | (np.arange(FRAMES)[None] == still.query_frames[:, None])))


def test_tracking_the_exact_procedural_motion_beats_staying_in_place(procedural):
    _, videos = procedural
    tracked, held = [], []
    for i, video in enumerate(videos):
        layers = synthetic_video.scene_layers(
            synthetic_video.video_seed(0, i), num_frames=FRAMES, height=SIZE, width=SIZE
        )
        prediction = tapvid.track_points(
            SurfaceEncoder(layers)(video.frames), None, propagation.Propagator(crw_small()), video,
            sigma=0.5, topk=3, occlusion_threshold=0.5,
        )  # fmt: skip
        copy = tapvid.stay_in_place(video)
        for out, p in ((tracked, prediction), (held, copy)):
            out.append(
                tapvid_metrics.video_metrics(video.query_frames, video.occluded, video.tracks, p.occluded, p.tracks)
            )
    tracked, held = tapvid_metrics.mean_over_videos(tracked), tapvid_metrics.mean_over_videos(held)
    # Measured: AJ 0.63 vs 0.515, <d_avg 0.715 vs 0.617.
    assert tracked["average_jaccard"] > held["average_jaccard"] + 0.05
    assert tracked["average_pts_within_thresh"] > held["average_pts_within_thresh"] + 0.05


def tapvid_run_config(path, output, **fields):
    config = tapvid_config.get_config()
    fields = dict(dict(tapvid_path=path, tapvid_size=SIZE, encoder="lab", preset="crw_small"), **fields)
    config.update(output=str(output), **fields)
    return ml_collections.ConfigDict(config)


@pytest.mark.slow
def test_evaluator_end_to_end_with_floors_and_overlays(procedural, tmp_path):
    path, videos = procedural
    summary = evaluate.evaluate(
        tapvid_run_config(path, tmp_path / "out", save_overlays=True, sequences="synthetic_001,synthetic_002")
    )
    results = json.loads((tmp_path / "out" / "tapvid_results.json").read_text())
    assert list(results["per_video"]) == ["synthetic_001", "synthetic_002"]
    assert results["videos"] == 2 and results["points"] == sum(len(v.query_frames) for v in videos[1:])
    for key in tapvid_metrics.KEYS:
        mean = np.mean([results["per_video"][name][key] for name in results["per_video"]])
        assert results[key] == pytest.approx(mean)
    # The copy floor is staying in place, scored by the same code.
    held = [tapvid.stay_in_place(v) for v in videos[1:]]
    expected = tapvid_metrics.mean_over_videos(
        [
            tapvid_metrics.video_metrics(v.query_frames, v.occluded, v.tracks, h.occluded, h.tracks)
            for v, h in zip(videos[1:], held)
        ]
    )
    assert summary["floors"]["copy"]["average_jaccard"] == pytest.approx(expected["average_jaccard"])
    assert summary["floors"]["lab"] is summary["results"]  # the lab encoder is its own floor
    assert sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir()) == [
        "synthetic_001.mp4",
        "synthetic_002.mp4",
    ]
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["results"]["average_jaccard"] == pytest.approx(summary["results"]["average_jaccard"])
    predictions = np.load(tmp_path / "out" / tapvid.PREDICTIONS)
    assert predictions["synthetic_001/tracks"].shape == videos[1].tracks.shape
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<img ") == 2 * 4 and "synthetic_002" in page and "copy floor" in page


def test_a_bad_or_missing_pickle_is_a_clear_error(tmp_path):
    bad = str(tmp_path / "bad.pkl")
    with open(bad, "wb") as f:
        f.write(b"\x80\x05K\x03.")  # a pickled int
    with pytest.raises(ValueError, match="bad.pkl holds a int"):
        evaluate.evaluate(tapvid_run_config(bad, tmp_path / "out"))
    # A missing path fails before any model is loaded (the checkpoint does not exist either).
    missing = tapvid_run_config(
        str(tmp_path / "missing.pkl"), tmp_path / "out", encoder="trained", checkpoint=str(tmp_path / "no_model")
    )
    with pytest.raises(FileNotFoundError, match="missing.pkl does not exist"):
        evaluate.evaluate(missing)
