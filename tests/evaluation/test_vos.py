"""The VOS loop: label sampling and decoding, segmentation of moving patterns, mask files."""

import os

import cv2
import numpy as np

from mer_jax.evaluation import masks_io, propagation, protocol, vos


def test_labels_at_stride_nearest_samples_and_ignores_void():
    mask = np.zeros((8, 8), np.uint8)
    mask[:4, :4] = 1
    mask[4:, 4:] = 2
    mask[0, 4:] = 255
    labels = vos.labels_at_stride(mask, [1, 2], 4, 4)
    assert labels.shape == (4, 4, 3)
    np.testing.assert_array_equal(labels.argmax(-1), [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
    np.testing.assert_array_equal(labels.sum(-1), 1.0)


def test_labels_to_mask_upsamples_to_the_frame():
    soft = np.zeros((2, 3, 2), np.float32)
    soft[..., 0] = 1.0
    soft[:, 2] = [0.0, 1.0]  # right column of cells is object 1
    mask = np.asarray(vos.labels_to_mask(soft, 7, 10, foreground_scale=1.0))
    assert mask.shape == (7, 10)
    # Cell centres are at 4j + 1.5; half-way between cells 1 and 2 lies at x = 7.5.
    np.testing.assert_array_equal(mask[:, :8], 0)
    np.testing.assert_array_equal(mask[:, 8:], 1)
    uniform = np.broadcast_to(np.array([0.55, 0.45], np.float32), (2, 3, 2))
    assert not np.asarray(vos.labels_to_mask(uniform, 7, 10, foreground_scale=1.0)).any()
    assert np.asarray(vos.labels_to_mask(uniform, 7, 10, foreground_scale=1.3)).all()
    resized = np.asarray(vos.labels_to_mask(soft, 7, 10, foreground_scale=1.0, output_size=(14, 20)))
    np.testing.assert_array_equal(resized[:, :16], 0)
    np.testing.assert_array_equal(resized[:, 16:], 1)


def pixel_encoder(frames, flow=None):
    """Raw pixels at the centre of each 4 x 4 cell: a translating texture is tracked exactly."""
    return np.asarray(frames, np.float32)[:, 1::4, 1::4] / 255.0


def translating_video():
    """A random texture moving 4 px right per frame; object 2 first appears at frame 3."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(32, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(texture, 4 * t, axis=1) for t in range(6)])
    first = np.zeros((32, 64), np.uint8)
    first[8:24, 16:32] = 1
    late = np.zeros((32, 64), np.uint8)
    late[0:8, 40:56] = 2
    names = [f"{t:05d}" for t in range(6)]
    return vos.Video("moving", frames, {0: first, 3: late}, [1, 2], names), first, late


PRESET = protocol.Preset(context="crw", radius=3, temperature=0.001, topk=1, normalize=True, crw_context=1, tile=4)


def test_segment_video_follows_a_translating_pattern_and_adds_late_objects():
    video, first, late = translating_video()
    masks = dict(vos.segment_video(pixel_encoder, propagation.Propagator(PRESET), video))
    assert sorted(masks) == list(range(6))
    for t in range(6):
        want = np.roll(first, 4 * t, axis=1)
        if t >= 3:
            want = np.where(np.roll(late, 4 * (t - 3), axis=1) == 2, 2, want)
        assert (masks[t] == want).mean() > 0.97, t
    assert (masks[2] == 2).sum() == 0 and (masks[4] == 2).sum() > 100
    np.testing.assert_array_equal(masks[0], first)  # The annotation itself.


def test_segment_videos_start_at_the_first_annotation_and_write_every_frame(tmp_path):
    video, first, late = translating_video()
    later = video._replace(annotations={2: first, 3: late}, palette=masks_io.davis_palette()[::-1].copy())
    ((got_video, masks),) = list(vos.segment_videos([later], pixel_encoder, PRESET))
    assert got_video is later and masks.shape == (6, 32, 64) and masks.dtype == np.uint8
    assert not masks[:2].any()  # Before the first annotation.
    np.testing.assert_array_equal(masks[2], first)
    direct = dict(vos.segment_video(pixel_encoder, propagation.Propagator(PRESET), later))
    for t in range(2, 6):
        np.testing.assert_array_equal(masks[t], direct[t])
    vos.write_masks(tmp_path / "moving", later, masks)
    assert sorted(os.listdir(tmp_path / "moving")) == [f"{n}.png" for n in later.frame_names]
    for t, name in enumerate(later.frame_names):
        np.testing.assert_array_equal(masks_io.read_mask(tmp_path / "moving" / f"{name}.png"), masks[t])
    np.testing.assert_array_equal(masks_io.read_palette(tmp_path / "moving" / "00004.png"), later.palette)
    vos.write_overlay(str(tmp_path / "overlays" / "moving.mp4"), later, masks)
    assert os.path.getsize(tmp_path / "overlays" / "moving.mp4") > 0


def test_output_size_resizes_the_masks_not_the_frames():
    video, first, _ = translating_video()
    big = np.repeat(np.repeat(first, 2, axis=0), 2, axis=1)
    resized = video._replace(annotations={0: big}, object_ids=[1], output_size=(64, 128))
    masks = dict(vos.segment_video(pixel_encoder, propagation.Propagator(PRESET), resized))
    assert all(m.shape == (64, 128) for m in masks.values())
    for t in (1, 4):
        want = np.roll(big, 8 * t, axis=1)
        assert (masks[t] == want).mean() > 0.97, t


def test_copy_floor_holds_each_annotation_still_from_its_frame():
    video, first, late = translating_video()
    started = video._replace(annotations={1: first, 3: late})
    ((_, masks),) = list(vos.segment_videos([started], vos.CopyFirstFrame(), PRESET))
    both = first.copy()
    both[late > 0] = 2
    expected = np.stack([np.zeros_like(first), first, first, both, both, both])
    np.testing.assert_array_equal(masks, expected)


def test_overlay_of_odd_size_keeps_every_frame_at_the_even_size_below(tmp_path):
    video, first, _ = translating_video()
    masks = np.repeat(first[None, :31, :63], len(video.frames), axis=0)  # 63x31: both sides odd
    vos.write_overlay(str(tmp_path / "odd.mp4"), video, masks, fps=5.0)
    capture = cv2.VideoCapture(str(tmp_path / "odd.mp4"))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    assert capture.get(cv2.CAP_PROP_FPS) == 5.0
    capture.release()
    assert len(frames) == len(video.frames) and all(frame.shape == (30, 62, 3) for frame in frames)
    # The masks are drawn where they are, over the frame cropped (not squeezed) to 62x30.
    shown = frames[0][..., ::-1].astype(int)  # BGR -> RGB
    frame = cv2.resize(video.frames[0], (63, 31))[:30, :62].astype(int)
    change = np.abs(shown - frame).mean(-1)
    inside = first[:30, :62] > 0
    assert change[inside].mean() > change[~inside].mean() + 20
