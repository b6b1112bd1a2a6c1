"""data_prep.build: datasets written from generated videos read back exactly; bad data is named;
training from a built dataset (configs/real.py:debug) with DAVIS evaluation."""

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from configs import real
from data_prep import build, compute_flow, video_builder
from mer_jax import input_pipeline, train
from mer_jax.data import resize, sources, synthetic_video, video_dataset, video_files
from tests import fake_data, test_train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_video(tmp_path, name, clip, frames_root="frames", flow_gap=1):
    """Frames as JPEG folder <frames_root>/<name>/ and its exact flow as flow/<name>.npz (in the
    compute_flow format); returns the frames as decoded from the JPEGs."""
    names = [f"{t:05d}.jpg" for t in range(len(clip.frames))]
    for frame, frame_name in zip(clip.frames, names):
        fake_data.write_jpeg(str(tmp_path / frames_root / name / frame_name), frame)
    os.makedirs(tmp_path / "flow", exist_ok=True)
    flow16 = clip.flow.astype(np.float16)
    np.savez_compressed(tmp_path / "flow" / f"{name}.npz", flow=flow16, frames=np.asarray(names), flow_gap=flow_gap)
    return np.stack([cv2.imread(str(tmp_path / frames_root / name / n))[..., ::-1] for n in names])


def jpeg_round_trip(frame, quality=90):
    """What the dataset stores for an RGB frame: its decoded JPEG at `quality`."""
    encoded = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def clip(seed, num_frames=7, height=24, width=40):
    return synthetic_video.generate_video(seed, num_frames=num_frames, height=height, width=width, num_objects=1)


def test_frames_and_flow_read_back_exactly_as_written(tmp_path):
    clips = {"b_video": clip(0, num_frames=7), "a_video": clip(1, num_frames=9)}
    stored = {name: write_video(tmp_path, name, c) for name, c in clips.items()}
    path, skipped = build.build(
        "ytvos", str(tmp_path / "frames"), str(tmp_path / "tfds"), flow_root=str(tmp_path / "flow"), image_size=0
    )
    assert skipped == [] and path == os.path.join(str(tmp_path / "tfds"), "ytvos", "1.0.0")
    source = video_dataset.TfdsSource(str(tmp_path / "tfds"), "ytvos", image_size=0, flow_gap=1)
    assert [source.name(v) for v in range(len(source))] == ["a_video", "b_video"]  # sorted by name
    source.size = (24, 40)  # Read at the stored size: no resize.
    for video, name in enumerate(["a_video", "b_video"]):
        assert source.num_frames(video) == len(clips[name].frames)
        frames = np.arange(source.num_frames(video))
        images, flow = source.read(video, frames, with_flow=True)
        expected = np.stack([jpeg_round_trip(f) for f in stored[name]])
        np.testing.assert_array_equal(images, expected)
        np.testing.assert_array_equal(flow, clips[name].flow.astype(np.float16).astype(np.float32))


def test_frames_are_stored_resized_with_their_flow_rescaled(tmp_path):
    c = clip(2, height=24, width=40)
    stored = write_video(tmp_path, "vid", c)
    build.build("folder", str(tmp_path / "frames"), str(tmp_path / "tfds"), flow_root=str(tmp_path / "flow"),
                image_size=16)  # fmt: skip
    source = video_dataset.TfdsSource(str(tmp_path / "tfds"), "folder", image_size=16, flow_gap=1)
    images, flow = source.read(0, np.array([1, 3, 6]), with_flow=True)
    assert images.shape == (3, 16, 16, 3) and flow.shape == (3, 16, 16, 2)
    expected = [jpeg_round_trip(cv2.resize(stored[t], (16, 16), interpolation=cv2.INTER_AREA)) for t in (1, 3, 6)]
    np.testing.assert_array_equal(images, np.stack(expected))
    field = c.flow[3].astype(np.float16).astype(np.float32)
    reference = cv2.resize(field, (16, 16), interpolation=cv2.INTER_AREA) * np.array([16 / 40, 16 / 24])
    np.testing.assert_allclose(flow[1], reference.astype(np.float16), rtol=1e-3, atol=1e-3)


def test_flow_computed_at_a_smaller_size_is_built_like_resized_flow(tmp_path):
    c = clip(5, num_frames=6, height=48, width=64)
    write_video(tmp_path, "vid", c)
    compute_flow.compute_all(str(tmp_path / "frames"), str(tmp_path / "small_flow"), flow_gap=1, workers=1,
                             flow_size=32)  # fmt: skip
    build.build("ytvos", str(tmp_path / "frames"), str(tmp_path / "tfds"), flow_root=str(tmp_path / "small_flow"),
                image_size=32)  # fmt: skip
    source = video_dataset.TfdsSource(str(tmp_path / "tfds"), "ytvos", image_size=32, flow_gap=1)
    _, flow = source.read(0, np.arange(6), with_flow=True)
    stored = compute_flow.load_flow(str(tmp_path / "small_flow" / "vid.npz"))
    assert stored.frame_size == (48, 64) and stored.flow.shape == (6, 32, 32, 2)
    np.testing.assert_array_equal(flow, stored.flow)  # already at the stored size: kept as computed
    exact = np.stack([resize.resize_flow(f, (32, 32)) for f in c.flow])
    assert np.abs(flow[1:] - exact[1:]).mean() < 0.5 * np.abs(exact[1:]).mean()


def test_resize_flow_scales_vectors_by_the_size_ratios():
    flow = np.zeros((32, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.0, -2.0
    np.testing.assert_allclose(resize.resize_flow(flow, (16, 16)), np.broadcast_to([0.75, -1.0], (16, 16, 2)))
    np.testing.assert_allclose(resize.resize_flow(flow, (64, 128)), np.broadcast_to([6.0, -4.0], (64, 128, 2)))


def test_reading_at_another_size_resizes_frames_and_flow_together(tmp_path):
    c = clip(3, height=32, width=32)
    write_video(tmp_path, "vid", c)
    build.build("ytvos", str(tmp_path / "frames"), str(tmp_path / "tfds"), flow_root=str(tmp_path / "flow"),
                image_size=32)  # fmt: skip
    full = video_dataset.TfdsSource(str(tmp_path / "tfds"), "ytvos", image_size=32, flow_gap=1)
    half = video_dataset.TfdsSource(str(tmp_path / "tfds"), "ytvos", image_size=16, flow_gap=1)
    frames = np.array([2, 4])
    (big, big_flow), (small, small_flow) = full.read(0, frames, True), half.read(0, frames, True)
    np.testing.assert_array_equal(small, np.stack([resize.resize_frame(f, (16, 16)) for f in big]))
    np.testing.assert_allclose(small_flow, np.stack([resize.resize_flow(f, (16, 16)) for f in big_flow]), atol=1e-6)
    np.testing.assert_allclose(small_flow.mean(), big_flow.mean() / 2, atol=1e-3)


def test_folder_dataset_reads_video_files_and_davis_uses_the_train_split(tmp_path):
    c = clip(4, num_frames=6, height=32, width=32)
    os.makedirs(tmp_path / "videos")
    writer = cv2.VideoWriter(str(tmp_path / "videos" / "movie.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for frame in c.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    write_video(tmp_path, "clip_folder", c, frames_root="videos")
    build.build("folder", str(tmp_path / "videos"), str(tmp_path / "tfds"), image_size=0)  # DIS flow computed here
    source = video_dataset.TfdsSource(str(tmp_path / "tfds"), "folder", image_size=32, flow_gap=1)
    assert [source.name(v) for v in range(len(source))] == ["clip_folder", "movie"]
    assert source.num_frames(1) == 6
    movie, flow = source.read(1, np.arange(6), True)
    assert np.abs(movie.astype(int) - c.frames).mean() < 8  # MJPG + JPEG, not exact
    # Every frame has motion, the first too (minus its flow to frame 1: data.flow.dis_flow).
    assert np.isfinite(flow).all() and np.abs(flow).max(axis=(1, 2, 3)).min() > 0.05

    davis = tmp_path / "DAVIS"
    for name, seed in (("train_seq", 5), ("val_seq", 6)):
        write_video(tmp_path, name, clip(seed), frames_root="DAVIS/JPEGImages/480p")
    os.makedirs(davis / "ImageSets" / "2017")
    (davis / "ImageSets" / "2017" / "train.txt").write_text("train_seq\n")
    entries = video_files.list_videos(str(davis / "JPEGImages" / "480p"), "davis")
    assert [e.name for e in entries] == ["train_seq"]


def make_bad_videos(tmp_path):
    """Five good-looking videos, each broken in one way, plus one good video."""
    for i, name in enumerate(["corrupt", "good", "mismatch", "nan_flow", "no_flow", "short"]):
        write_video(tmp_path, name, clip(10 + i, num_frames=3 if name == "short" else 6))
    (tmp_path / "frames" / "corrupt" / "00002.jpg").write_bytes(b"not a jpeg")
    os.remove(tmp_path / "flow" / "no_flow.npz")
    bad = np.full((6, 24, 40, 2), np.nan, np.float16)
    np.savez(tmp_path / "flow" / "nan_flow.npz", flow=bad, frames=np.asarray([f"{t:05d}.jpg" for t in range(6)]))
    small = np.zeros((6, 12, 20, 2), np.float16)
    np.savez(tmp_path / "flow" / "mismatch.npz", flow=small, frames=np.asarray([f"{t:05d}.jpg" for t in range(6)]))


EXPECTED_ERRORS = {
    "corrupt": r"video corrupt: cannot decode image .*corrupt.00002\.jpg",
    "mismatch": r"video mismatch: flow file .*mismatch\.npz was computed from 20x12 frames but the frames in .* "
    r"are 40x24",
    "nan_flow": r"video nan_flow: flow file .*nan_flow\.npz contains NaN",
    "no_flow": r"video no_flow: flow file .*no_flow\.npz is missing",
    "short": r"video short: .*short has 3 frames, fewer than a training clip needs \(--min_frames=5\)",
}


def test_each_bad_video_stops_the_build_with_a_message_naming_it(tmp_path):
    make_bad_videos(tmp_path)
    for name, pattern in EXPECTED_ERRORS.items():
        lst = tmp_path / f"{name}.txt"
        lst.write_text(f"{name}\n")
        with pytest.raises(video_files.BadVideoError, match=pattern):
            build.build("ytvos", str(tmp_path / "frames"), str(tmp_path / "tfds"), flow_root=str(tmp_path / "flow"),
                        video_list=str(lst))  # fmt: skip
        assert not os.path.exists(tmp_path / "tfds" / "ytvos")  # Nothing half-built is left behind.


@pytest.mark.slow
def test_skip_bad_builds_the_rest_and_prints_a_summary(tmp_path):
    make_bad_videos(tmp_path)
    command = [sys.executable, "-m", "data_prep.build", "--dataset=ytvos", f"--frames_root={tmp_path / 'frames'}",
               f"--flow_root={tmp_path / 'flow'}", f"--data_dir={tmp_path / 'tfds'}", "--skip_bad", "--workers=2",
               "--image_size=16"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = result.stdout[result.stdout.index("Skipped 5 bad videos:") :]
    for pattern in EXPECTED_ERRORS.values():
        assert any(re.search(pattern, line) for line in summary.splitlines()), pattern
    source = video_dataset.TfdsSource(str(tmp_path / "tfds"), "ytvos", image_size=16, flow_gap=1)
    assert [source.name(v) for v in range(len(source))] == ["good"]
    metadata = json.loads((tmp_path / "tfds" / "ytvos" / "1.0.0" / "metadata.json").read_text())
    assert len(metadata["skipped"]) == 5 and metadata["image_size"] == 16
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert again.returncode != 0 and "already exists: delete it or pass --overwrite" in again.stderr


def test_reading_reports_config_mismatches_and_corrupt_records(tmp_path):
    write_video(tmp_path, "vid", clip(20))
    build.build("ytvos", str(tmp_path / "frames"), str(tmp_path / "tfds"), flow_root=str(tmp_path / "flow"),
                image_size=16)  # fmt: skip
    with pytest.raises(ValueError, match="flow_gap=1 or rebuild with --flow_gap=2"):
        video_dataset.TfdsSource(str(tmp_path / "tfds"), "ytvos", image_size=16, flow_gap=2)
    with pytest.raises(FileNotFoundError, match="python -m data_prep.build --dataset=ytvos"):
        video_dataset.TfdsSource(str(tmp_path / "tfds"), "davis", image_size=16, flow_gap=1)
    source = video_dataset.TfdsSource(str(tmp_path / "tfds"), "ytvos", image_size=16, flow_gap=1)
    original = source.records.__getitems__

    def corrupt(indices, field, value):
        examples = original(indices)
        for example in examples:
            example[field] = value
        return examples

    source.records.__getitems__ = lambda i: corrupt(i, "jpeg", np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match="frame 2 of video vid in .*cannot be decoded"):
        source.read(0, np.array([2]))
    source.records.__getitems__ = lambda i: corrupt(i, "flow", np.full((16, 16, 2), np.nan, np.float16))
    with pytest.raises(ValueError, match="frame 2 of video vid in .*NaN"):
        source.read(0, np.array([2]), with_flow=True)
    source.records.__getitems__ = lambda i: corrupt(i, "flow", np.zeros((8, 16, 2), np.float16))
    with pytest.raises(ValueError, match="flow is 16x8 but the frame is 16x16"):
        source.read(0, np.array([2]), with_flow=True)


def test_too_short_videos_are_named_before_training(tmp_path):
    write_video(tmp_path, "long", clip(30, num_frames=6))
    write_video(tmp_path, "brief", clip(31, num_frames=3))
    build.build("ytvos", str(tmp_path / "frames"), str(tmp_path / "tfds"), flow_root=str(tmp_path / "flow"),
                image_size=16, min_frames=1)  # fmt: skip
    source = video_dataset.TfdsSource(str(tmp_path / "tfds"), "ytvos", image_size=16, flow_gap=1)
    with pytest.raises(ValueError, match=r"1 videos are too short .* brief \(3 frames\)"):
        input_pipeline.ClipLoader(source, global_batch=2, process_index=0, process_count=1, seed=0, num_refs=2,
                                  frame_gaps=(2, 3), gap_probs=(0.5, 0.5), clips_per_video=1, prefetch=1)  # fmt: skip


def copy_floor_j_mean(davis):
    """Mean over objects of the Jaccard of each frame 1..T-2 with the first mask held still (empty
    union: 1), as the official semi-supervised scoring defines J."""
    values = []
    for video in davis.values():
        for k in range(1, int(video.masks[0].max()) + 1):
            first = video.masks[0] == k
            per_frame = []
            for truth in video.masks[1:-1] == k:
                union = (truth | first).sum()
                per_frame.append(1.0 if union == 0 else (truth & first).sum() / union)
            values.append(np.mean(per_frame))
    return float(np.mean(values))


@pytest.mark.slow
def test_training_runs_from_a_built_dataset_and_scores_davis_with_both_floors(tmp_path, capsys):
    """configs/real.py:debug: trains from a dataset built from clips, then the DAVIS J&F of the
    trained encoder, its VEN path and both floors reach TensorBoard; the copy floor's J-Mean is a
    plain-NumPy Jaccard of the first masks held still."""
    for i in range(4):
        write_video(tmp_path, f"video_{i}", clip(40 + i, num_frames=12, height=40, width=48))
    build.build("folder", str(tmp_path / "frames"), str(tmp_path / "tfds"), flow_root=str(tmp_path / "flow"),
                name="real_clips", image_size=32, workers=2)  # fmt: skip
    davis = fake_data.davis_tree(str(tmp_path / "DAVIS"), num_sequences=2, num_frames=6)
    config = real.get_config("debug")
    config.data.data_dir = str(tmp_path / "tfds")
    config.evals.davis.davis_root = str(tmp_path / "DAVIS")
    config.evals.davis.at_end = True
    state = train.train_and_evaluate(config, str(tmp_path / "work"))
    assert int(state.step) == 2
    scalars = test_train.read_scalars(str(tmp_path / "work"))
    for path in ("trained", "trained_ven", "floors/copy", "floors/lab"):
        value = scalars[f"davis/{path}/J_F-Mean"][2]  # TensorBoard writes "&" as "_".
        report = json.loads((tmp_path / "work" / "eval_davis" / path / "results.json").read_text())
        assert 0.0 <= value <= 1.0 and value == pytest.approx(report["J&F-Mean"], rel=1e-6)
    assert scalars["davis/floors/copy/J-Mean"][2] == pytest.approx(copy_floor_j_mean(davis), rel=1e-6)
    assert scalars["davis/floors/copy/J-Mean"][2] < 1.0  # The first sequence's objects move.
    table = capsys.readouterr().out
    assert all(row in table for row in ("trained", "trained_ven", "copy floor", "lab floor"))
    loader = input_pipeline.ClipLoader(
        sources.make_source(config.data, config.seed), global_batch=4, process_index=0, process_count=1,
        seed=0, num_refs=2, frame_gaps=(2, 3, 5), gap_probs=(0.4, 0.4, 0.2), clips_per_video=1, prefetch=1,
        with_flow=True, num_workers=2,
    )  # fmt: skip
    batch = loader.load(0)
    assert batch["frames"].shape == (4, 3, 32, 32, 3) and batch["flow"].shape == (4, 3, 32, 32, 2)
    np.testing.assert_array_equal(sorted(batch["video_id"]), [0, 1, 2, 3])


def test_several_frames_roots_build_one_dataset_and_name_collisions(tmp_path):
    """`--frames_root=A,B` pools both folders (frame folders and video files, other files ignored)
    for compute_flow and build; a name in both is refused naming both paths."""
    write_video(tmp_path, "in_a", clip(50, num_frames=6), frames_root="a")
    write_video(tmp_path, "in_b", clip(51, num_frames=6), frames_root="b")
    (tmp_path / "b" / "README.md").write_text("not a video")
    roots = f"{tmp_path / 'a'},{tmp_path / 'b'}"
    for command in (
        ["data_prep.compute_flow", f"--frames_root={roots}", f"--output={tmp_path / 'flow2'}", "--workers=1"],
        ["data_prep.build", "--dataset=folder", "--name=pooled", f"--frames_root={roots}",
         f"--flow_root={tmp_path / 'flow2'}", f"--data_dir={tmp_path / 'tfds'}", "--image_size=16", "--workers=1"],
    ):  # fmt: skip
        result = subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "flow2")) == ["in_a.npz", "in_b.npz"]
    source = video_dataset.TfdsSource(str(tmp_path / "tfds"), "pooled", image_size=16, flow_gap=1)
    assert [source.name(v) for v in range(len(source))] == ["in_a", "in_b"]
    write_video(tmp_path, "in_a", clip(52, num_frames=6), frames_root="b")
    with pytest.raises(ValueError, match=r"two videos are named 'in_a': .*a.in_a and .*b.in_a"):
        video_files.list_videos([str(tmp_path / "a"), str(tmp_path / "b")])


def test_examples_stream_into_several_shards_read_back_in_order(tmp_path, monkeypatch):
    """A dataset bigger than a shard is split over several array_record files (never held in
    memory whole, no TensorFlow); reading crosses shard boundaries in video and frame order."""
    clips = {f"video_{i}": clip(60 + i, num_frames=6) for i in range(3)}
    for name, c in clips.items():
        write_video(tmp_path, name, c)
    arguments = dict(flow_root=str(tmp_path / "flow"), image_size=16)
    build.build("ytvos", str(tmp_path / "frames"), str(tmp_path / "one"), **arguments)
    monkeypatch.setattr(video_builder, "SHARD_BYTES", 4000)  # About 4 frames a shard.
    path, _ = build.build("ytvos", str(tmp_path / "frames"), str(tmp_path / "many"), **arguments)
    assert len([f for f in os.listdir(path) if ".array_record-" in f]) >= 4
    one, many = (video_dataset.TfdsSource(str(tmp_path / d), "ytvos", 16, 1) for d in ("one", "many"))
    for video in range(3):
        for a, b in zip(one.read(video, np.arange(6), True), many.read(video, np.arange(6), True)):
            np.testing.assert_array_equal(a, b)
