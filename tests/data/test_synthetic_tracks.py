"""Exact point tracks of the procedural videos: they agree with the renderer's independent exact flow
and masks, and they come out in the TAP-Vid format."""

import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

from mer_jax.data import synthetic_tracks, synthetic_video
from mer_jax.evaluation.benchmarks.tapvid import data as tapvid_data

SIZE = dict(num_frames=10, height=48, width=64)


@pytest.mark.parametrize("kind", ["easy", "camouflage"])
def test_tracks_follow_the_exact_flow_and_masks(kind):
    seed, num_points = 4, 150
    video = synthetic_video.generate_video(seed, **SIZE, kind=kind)
    tracks, occluded, layer = synthetic_tracks.point_tracks(seed, num_points=num_points, **SIZE, kind=kind)
    assert tracks.shape == (num_points, 10, 2) and occluded.shape == (num_points, 10)
    pixel = np.rint(tracks).astype(int)
    rows, cols = np.clip(pixel[..., 1], 0, 47), np.clip(pixel[..., 0], 0, 63)
    seen = video.masks[np.arange(10)[None, :], rows, cols] == layer[:, None]  # [N, T]
    visible = ~occluded
    # The nearest pixel shows the point's own surface wherever it is visible, except within half a
    # pixel of an outline; where it is hidden in the image, another surface (same exception).
    inside = (pixel[..., 0] >= 0) & (pixel[..., 0] < 64) & (pixel[..., 1] >= 0) & (pixel[..., 1] < 48)
    assert seen[visible].mean() > 0.97
    assert (occluded & inside).sum() > 20 and seen[occluded & inside].mean() < 0.15
    assert 0.5 < visible.mean() < 1.0  # some points are hidden, most are not
    # Backward flow at the point's pixel in frame t carries it to its position in frame t - 1
    # (up to the rotation across the sub-pixel offset to that pixel's centre).
    for t in range(1, 10):
        both = visible[:, t] & visible[:, t - 1] & seen[:, t]
        flow = video.flow[t, rows[both, t], cols[both, t]]
        np.testing.assert_allclose(tracks[both, t] + flow, tracks[both, t - 1], atol=0.05)


def test_points_are_deterministic_and_sampled_on_every_frame():
    a = synthetic_tracks.point_tracks(7, num_points=60, **SIZE)
    b = synthetic_tracks.point_tracks(7, num_points=60, **SIZE)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    query_frames = np.argmax(~a[1], axis=1)
    assert len(np.unique(query_frames)) > 2  # not every point is first seen in frame 0


def test_tapvid_examples_round_trip_to_pixel_tracks(tmp_path):
    examples = synthetic_tracks.tapvid_examples(3, 2, num_points=12, **SIZE, num_objects=2)
    assert list(examples) == ["synthetic_000", "synthetic_001"]
    path = str(tmp_path / "synthetic.pkl")
    tapvid_data.write_pickle(path, examples)
    video = next(tapvid_data.read_videos(path, size=64))  # 48 x 64 frames resized to 64 x 64
    tracks, occluded, _ = synthetic_tracks.point_tracks(
        synthetic_video.video_seed(3, 0), num_points=12, **SIZE, num_objects=2
    )
    kept = (~occluded).any(axis=1)
    expected = (tracks[kept] + 0.5) * [64 / 64, 64 / 48]  # raster coordinates of the resized frames
    np.testing.assert_allclose(video.tracks, expected, atol=1e-4)
    np.testing.assert_array_equal(video.occluded, occluded[kept])
    frames = synthetic_video.generate_video(synthetic_video.video_seed(3, 0), **SIZE, num_objects=2).frames
    np.testing.assert_array_equal(examples["synthetic_000"]["video"], frames)


@pytest.mark.slow
def test_command_line_writes_a_pickle_and_keeps_an_existing_one(tmp_path):
    output = tmp_path / "synthetic.pkl"
    command = [sys.executable, "-m", "data_prep.synthetic_tapvid", f"--output={output}", "--num_videos=2",
               "--num_frames=5", "--size=32", "--num_points=4", "--seed=3"]  # fmt: skip
    repo = pathlib.Path(__file__).resolve().parents[2]
    completed = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    with open(output, "rb") as f:
        written = pickle.load(f)
    expected = synthetic_tracks.tapvid_examples(3, 2, num_points=4, num_frames=5, height=32, width=32, kind="easy")
    assert list(written) == list(expected)
    np.testing.assert_array_equal(written["synthetic_001"]["points"], expected["synthetic_001"]["points"])
    again = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    assert again.returncode != 0 and "pass --overwrite" in again.stderr
