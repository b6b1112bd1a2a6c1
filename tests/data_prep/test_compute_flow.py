"""Flow pre-computation: accuracy of DIS on generated clips, resumability, clear errors, workers that end with
their parent."""

import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from data_prep import compute_flow
from mer_jax.data import synthetic_video
from tests import fake_data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_clip(root, name, clip):
    for t, frame in enumerate(clip.frames):
        fake_data.write_jpeg(os.path.join(root, name, f"{t:05d}.jpg"), frame)


def end_point_error(flow, clip, gap, first=False):
    """Mean EPE of flow [T - gap, H, W, 2] against clip.flow[gap:] (flow to `gap` frames earlier),
    over pixels whose surface is visible in both frames, away from mask edges and the border.
    `first`: flow [gap, H, W, 2] against clip.flow[:gap] (minus the flow to `gap` frames later)."""
    errors = []
    for i, t in enumerate(range(gap) if first else range(gap, len(clip.frames))):
        h, w = clip.masks[t].shape
        ys, xs = np.mgrid[0:h, 0:w]
        source, sign = (t + gap, -1.0) if first else (t - gap, 1.0)
        ty = np.clip(np.round(ys + sign * clip.flow[t, ..., 1]).astype(int), 0, h - 1)
        tx = np.clip(np.round(xs + sign * clip.flow[t, ..., 0]).astype(int), 0, w - 1)
        visible = clip.masks[t] == clip.masks[source][ty, tx]
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
    dis_error, zero_error = end_point_error(flow[3:], clip, 3), end_point_error(np.zeros_like(flow[3:]), clip, 3)
    assert dis_error < 1.0 and dis_error < 0.5 * zero_error, (dis_error, zero_error)
    # The first 3 frames have no frame 3 earlier: minus their flow to frame t + 3.
    dis_error = end_point_error(flow[:3], clip, 3, first=True)
    zero_error = end_point_error(np.zeros_like(flow[:3]), clip, 3, first=True)
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


@pytest.mark.slow
def test_command_line_with_workers(tmp_path):
    clip = synthetic_video.generate_video(3, num_frames=3, height=32, width=32, num_objects=1)
    for name in ("a", "b", "c"):
        write_clip(str(tmp_path / "frames"), name, clip)
    command = [sys.executable, "-m", "data_prep.compute_flow", f"--frames_root={tmp_path / 'frames'}",
               f"--output={tmp_path / 'flow'}", "--workers=2"]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    assert sorted(os.listdir(tmp_path / "flow")) == ["a.npz", "b.npz", "c.npz"]


def _children(pid):
    """{child pid: command line} of the live (not zombie) children of `pid`, read from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, parent = f.read().rsplit(")", 1)[1].split()[:2]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # It ended while being read.
            continue
        if int(parent) == pid and state != "Z":
            children[int(entry)] = command
    return children


def _alive(pid):
    """Whether process `pid` exists and is not a zombie (killed but not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, seconds, step=0.05):
    """Polls `condition` until it holds (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")
def test_workers_end_when_the_main_process_is_killed(tmp_path):
    clip = synthetic_video.generate_video(4, num_frames=8, height=240, width=320, num_objects=1)
    write_clip(str(tmp_path / "clip"), "frames", clip)
    (tmp_path / "frames").mkdir()
    num_videos = 100  # ~0.1 s each: the run is far from done when its first flow file appears.
    for i in range(num_videos):
        os.symlink(tmp_path / "clip" / "frames", tmp_path / "frames" / f"v{i:03d}", target_is_directory=True)
    out = tmp_path / "flow"
    command = [sys.executable, "-m", "data_prep.compute_flow", f"--frames_root={tmp_path / 'frames'}",
               f"--output={out}", "--workers=2"]  # fmt: skip
    parent = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = {}

    def done():  # Finished flow files, not the workers' temporary ones.
        return [name for name in os.listdir(out) if name.endswith(".npz") and not name.startswith(".")]

    def working():
        workers.update((pid, c) for pid, c in _children(parent.pid).items() if "spawn_main" in c)
        return len(workers) >= 2 and out.is_dir() and len(done()) > 0

    try:
        started = _wait_for(working, seconds=120)
        assert started and parent.poll() is None, f"2 workers and a first flow file did not appear: {workers}"
        assert len(done()) < num_videos  # Still working.
        parent.kill()
        parent.wait(timeout=10)
        all_gone = _wait_for(lambda: not any(_alive(pid) for pid in workers), seconds=10)
        assert all_gone, f"workers outlived their parent: {[pid for pid in workers if _alive(pid)]}"
    finally:
        parent.kill()
        parent.wait(timeout=10)
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert compute_flow.load_flow(str(out / done()[0]))[0].shape == (8, 240, 320, 2)


@pytest.mark.slow
def test_orphan_watchdog_exits_once_the_parent_is_gone(tmp_path):
    # The portable fallback, alone: a middle process starts a watched child, then is killed.
    watched = "import sys; from data_prep import compute_flow; compute_flow._exit_when_orphaned(int(sys.argv[1]), 0.05)"
    middle = (
        "import os, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {watched!r}, str(os.getpid())])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", middle], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        time.sleep(1.0)  # Long enough for the child to start watching (it also exits if it starts late).
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=10)
        assert _wait_for(lambda: not _alive(child), seconds=10), "the watched child outlived its parent"
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
