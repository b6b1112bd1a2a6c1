"""Clip sampling: gaps, video boundaries, epoch coverage, determinism, per-process slices."""

import collections

import numpy as np
import pytest

from configs import ytvos
from mer_jax import input_pipeline
from mer_jax.data import sources


class FakeSource:
    """Videos whose pixel values encode (video, frame), so reads can be checked exactly."""

    def __init__(self, lengths):
        self.lengths = lengths

    def __len__(self):
        return len(self.lengths)

    def num_frames(self, video):
        return self.lengths[video]

    def name(self, video):
        return f"fake_{video}"

    def read(self, video, frames, with_flow=False):
        assert np.all(frames >= 0) and np.all(frames < self.lengths[video])
        out = np.zeros((len(frames), 2, 2, 3), np.uint8)
        out[..., 0], out[..., 1] = video, np.asarray(frames)[:, None, None]
        return out, (out[..., :2].astype(np.float32) if with_flow else None)


def loader(source, **overrides):
    kwargs = dict(
        global_batch=4,
        process_index=0,
        process_count=1,
        seed=0,
        num_refs=2,
        frame_gaps=(2, 3, 5),
        gap_probs=(0.4, 0.4, 0.2),
        clips_per_video=1,
        prefetch=2,
    )
    kwargs.update(overrides)
    return input_pipeline.ClipLoader(source, **kwargs)


def test_clips_use_the_configured_gaps_with_their_probabilities():
    rng = np.random.default_rng(0)
    gaps = collections.Counter()
    for _ in range(4000):
        frames = input_pipeline.sample_clip(rng, 50, 2, (2, 3, 5), (0.4, 0.4, 0.2))
        assert frames[0] >= 0 and frames[-1] < 50
        gaps.update(np.diff(frames).tolist())
    assert set(gaps) == {2, 3, 5}
    total = sum(gaps.values())
    np.testing.assert_allclose([gaps[2] / total, gaps[3] / total, gaps[5] / total], [0.4, 0.4, 0.2], atol=0.02)


def test_short_videos_fall_back_to_the_smallest_gap_or_fail_clearly():
    rng = np.random.default_rng(0)
    for _ in range(100):
        frames = input_pipeline.sample_clip(rng, 6, 2, (2, 3, 5), (0.0, 0.0, 1.0))
        np.testing.assert_array_equal(np.diff(frames), [2, 2])
    with pytest.raises(ValueError, match="needs more than 4"):
        input_pipeline.sample_clip(rng, 4, 2, (2, 3, 5), (0.4, 0.4, 0.2))
    with pytest.raises(ValueError, match=r"1 videos are too short .* \(at least 5 frames\): fake_1 \(3 frames\)"):
        loader(FakeSource([30, 3, 30, 30]))


def test_every_epoch_visits_every_video_once():
    source = FakeSource([20] * 10)
    pipeline = loader(source, global_batch=5)
    seen = np.concatenate([pipeline.load(step)["video_id"] for step in range(6)])  # 3 epochs of 10
    for epoch in range(3):
        assert sorted(seen[epoch * 10 : (epoch + 1) * 10]) == list(range(10))
    assert not np.array_equal(seen[:10], seen[10:20])  # reshuffled each epoch


def test_frames_are_read_from_the_planned_videos_and_are_deterministic():
    source = FakeSource([20, 30, 25, 40])
    batch = loader(source).load(3)
    assert batch["frames"].shape == (4, 3, 2, 2, 3)
    np.testing.assert_array_equal(batch["frames"][:, :, 0, 0, 0], np.repeat(batch["video_id"][:, None], 3, 1))
    assert np.all(np.diff(batch["frames"][:, :, 0, 0, 1].astype(int), axis=1) > 0)  # target is last
    again = loader(source).load(3)
    np.testing.assert_array_equal(batch["frames"], again["frames"])
    other_seed = loader(source, seed=1).load(3)
    assert not np.array_equal(batch["frames"], other_seed["frames"])


def test_iteration_from_a_step_equals_loading_that_step():
    source = FakeSource([20, 30, 25, 40, 22])
    pipeline = loader(source)
    batches = pipeline.iterate(7)
    for step in range(7, 11):
        np.testing.assert_array_equal(next(batches)["frames"], pipeline.load(step)["frames"])
    batches.close()


def test_processes_read_disjoint_slices_of_the_same_global_batch():
    source = FakeSource([20, 30, 25, 40, 22, 31])
    whole = loader(source).load(5)
    parts = [loader(source, process_index=i, process_count=2).load(5) for i in range(2)]
    np.testing.assert_array_equal(np.concatenate([p["frames"] for p in parts]), whole["frames"])
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        loader(source, process_count=3)


def test_bad_gap_probabilities_are_rejected():
    with pytest.raises(ValueError, match="gap_probs"):
        loader(FakeSource([20]), gap_probs=(0.5, 0.5))


def test_synthetic_source_serves_generated_frames():
    config = ytvos.get_config("debug")
    source = sources.make_source(config.data, seed=0)
    assert len(source) == config.data.synthetic.num_videos
    frames, flow = source.read(1, np.array([0, 2, 4]), with_flow=True)
    assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, source.videos[1].frames[[0, 2, 4]])
    np.testing.assert_array_equal(flow, source.videos[1].flow[[0, 2, 4]])
    assert source.read(1, np.array([0]))[1] is None


def test_unknown_source_is_rejected():
    config = ytvos.get_config("debug")
    config.data.source = "youtube"
    with pytest.raises(ValueError, match="'synthetic' or 'tfds'"):
        sources.make_source(config.data, seed=0)
