"""Flow pre-computation: accuracy of DIS on generated clips, resumability, clear errors."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_prep import compute_flow
from mer_jax.data import synthetic_video
from tests import fake_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_clip(root, name, clip):
    for t, frame in enumerate(clip.frames):
        fake_data.write_jpeg(os.path.join(root, name, f"{t:05d}.jpg"), frame)


def end_point_error(flow, clip, gap):
    """Mean EPE of flow [T - gap, H, W, 2] against clip.flow[gap:] (flow to `gap` frames earlier),
    over pixels whose surface is visible in both frames, away from mask edges and the border."""
    errors = []
    for i, t in enumerate(range(gap, len(clip.frames))):
        h, w = clip.masks[t].shape
        ys, xs = np.mgrid[0:h, 0:w]
        ty = np.clip(np.round(ys + clip.flow[t, ..., 1]).astype(int), 0, h - 1)
        tx = np.clip(np.round(xs + clip.flow[t, ..., 0]).astype(int), 0, w - 1)
        visible = clip.masks[t] == clip.masks[t - gap][ty, tx]
        edges = cv2.dilate(cv2.Canny(clip.masks[t] * 40, 1, 1), np.ones((5, 5), np.uint8)) > 0
        keep = visible & ~edges
        keep[:4], keep[-4:], keep[:, :4], keep[:, -4:] = False, False, False, False
        errors.append(np.linalg.norm(flow[i] - clip.flow[t], axis=-1)[keep])
    return float(np.concatenate(errors).mean())


def test_dis_flow_of_a_generated_clip_is_accurate(tmp_path):
    # A 3-frame gap: motions of ~1.3 px on average, so that zero flow is clearly wrong.
    clip = synthetic_video.generate_video(0, num_frames=6, height=128, width=128, num_objects=2, lighting=False,
                                          flow_gap=3)  # fmt: skip
    write_clip(str(tmp_path / "frames"), "vid", clip)
    paths = compute_flow.compute_all(str(tmp_path / "frames"), str(tmp_path / "flow"), flow_gap=3, workers=1)
    flow, names, frame_size = compute_flow.load_flow(paths[0])
    assert flow.shape == (6, 128, 128, 2) and names == [f"{t:05d}.jpg" for t in range(6)] and frame_size == (128, 128)
    np.testing.assert_array_equal(flow[:3], 0.0)
    dis_error, zero_error = end_point_error(flow[3:], clip, 3), end_point_error(np.zeros_like(flow[3:]), clip, 3)
    assert dis_error < 1.0 and dis_error < 0.5 * zero_error, (dis_error, zero_error)


def test_resumes_and_never_counts_partial_files(tmp_path):
    clip = synthetic_video.generate_video(1, num_frames=3, height=32, width=32, num_objects=1)
    for name in ("a", "b"):
        write_clip(str(tmp_path / "frames"), name, clip)
    out = tmp_path / "flow"
    out.mkdir()
    (out / ".b.123.tmp.npz").write_bytes(b"half written")
    compute_flow.compute_all(str(tmp_path / "frames"), str(out), flow_gap=1, workers=1)
    done = (out / "a.npz").stat().st_mtime_ns
    compute_flow.compute_all(str(tmp_path / "frames"), str(out), flow_gap=1, workers=1)
    assert (out / "a.npz").stat().st_mtime_ns == done
    assert compute_flow.load_flow(str(out / "b.npz"))[0].shape == (3, 32, 32, 2)


def test_bad_inputs_name_the_file(tmp_path):
    clip = synthetic_video.generate_video(2, num_frames=3, height=32, width=32, num_objects=1)
    write_clip(str(tmp_path / "frames"), "vid", clip)
    (tmp_path / "frames" / "vid" / "00001.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot decode image .*00001.jpg"):
        compute_flow.compute_all(str(tmp_path / "frames"), str(tmp_path / "flow"), flow_gap=1, workers=1)
    with pytest.raises(FileNotFoundError, match="missing"):
        compute_flow.load_flow(str(tmp_path / "flow" / "none.npz"))
    np.savez(tmp_path / "nan.npz", flow=np.full((2, 4, 4, 2), np.nan, np.float16), frames=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="NaN"):
        compute_flow.load_flow(str(tmp_path / "nan.npz"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        compute_flow.compute_all(str(tmp_path / "nowhere"), str(tmp_path / "flow"), flow_gap=1, workers=1)


def test_command_line_with_workers(tmp_path):
    clip = synthetic_video.generate_video(3, num_frames=3, height=32, width=32, num_objects=1)
    for name in ("a", "b", "c"):
        write_clip(str(tmp_path / "frames"), name, clip)
    command = [sys.executable, "-m", "data_prep.compute_flow", f"--frames_root={tmp_path / 'frames'}",
               f"--output={tmp_path / 'flow'}", "--workers=2"]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    assert sorted(os.listdir(tmp_path / "flow")) == ["a.npz", "b.npz", "c.npz"]
