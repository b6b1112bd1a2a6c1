"""Optical-flow pre-computation for training with flow fusion.

  python -m data_prep.compute_flow --frames_root=PATH --output=FLOWDIR [--flow_gap=1] [--flow_size=0]
      [--workers=N]

`frames_root` holds one folder of frames per video (YouTube-VOS `train_all_frames/JPEGImages`,
DAVIS `JPEGImages/480p`, ...) and/or MP4/AVI files; `--frames_root=A,B` takes the videos of
several such folders (names must be unique across them). For every video this writes
`FLOWDIR/<video>.npz` with `flow` float16 [T, h, w, 2] (frame t to frame t - flow_gap, pixels of
the frames it was computed on, (dx, dy); for t < flow_gap minus the flow to frame t + flow_gap;
OpenCV DIS,
`mer_jax.data.flow.dis_flow`), `frames` (the frame file names; `00000`, `00001`, ... for a
video file), `flow_gap` and `frame_size` (the videos' own [H, W]). By default flow is computed at
the frames' own size (h, w = H, W), as the method does (docs/method.md, 'Flow fusion').
`--flow_size=S` computes it on the frames resized to S x S (as training sees them; never
cropped): on 480p DAVIS frames, S=256 takes 5 ms and 0.17 MB per frame instead of 44 ms and
0.97 MB.

Storage: float16 in an npz (zip, deflate level 1: as small as numpy's default level within 3%,
twice as fast). For |flow| < 64 px the rounding error is at most 0.016 px (half the float16
spacing 2^-5 at 32-64 px; smaller for smaller vectors), far below DIS's own error; vectors
beyond the float16 range (65,504 px) cannot occur in real frames.
Resumable: videos whose .npz exists are skipped; each file is written to a temporary name and
renamed when complete, so a killed run never leaves a half-written flow file behind. Worker
processes end with the main process, even when it is killed with SIGKILL (`_end_with_parent`).
"""

import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import zipfile
from typing import NamedTuple, Sequence

import numpy as np
import tqdm
from absl import app, flags

from mer_jax.data import flow as flow_lib
from mer_jax.data import resize, video_files

SUFFIX = ".npz"
_PR_SET_PDEATHSIG = 1  # From <linux/prctl.h>.
_ORPHAN_POLL_SECONDS = 1.0


def flow_path(flow_root: str, video: str) -> str:
    """Where the flow of `video` is stored."""
    return os.path.join(flow_root, video + SUFFIX)


class FlowFile(NamedTuple):
    """The content of a flow file."""

    flow: np.ndarray  # float32 [T, h, w, 2]
    frames: list[str]  # frame names, one per flow field
    frame_size: tuple[int, int]  # [H, W] of the frames the flow was computed from


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """An npz that np.load reads, deflated at level 1 (numpy's savez_compressed uses 6)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array))


def compute_video(entry: video_files.VideoEntry, output: str, flow_gap: int, flow_size: int = 0) -> str:
    """Computes and atomically writes one video's flow; returns the file written (or found)."""
    path = flow_path(output, entry.name)
    if os.path.exists(path):
        return path
    frames, names = video_files.read_video(entry)
    frame_size = frames.shape[1:3]
    if flow_size:
        frames = np.stack([resize.resize_frame(frame, (flow_size, flow_size)) for frame in frames])
    flow = flow_lib.dis_flow(frames, flow_gap)
    temporary = os.path.join(output, f".{entry.name}.{os.getpid()}.tmp{SUFFIX}")
    _write_npz(
        temporary,
        dict(flow=flow.astype(np.float16), frames=np.asarray(names), flow_gap=flow_gap, frame_size=frame_size),
    )
    os.replace(temporary, path)
    return path


def load_flow(path: str, flow_gap: int | None = None) -> FlowFile:
    """The flow of a file written by `compute_video`.

    Raises:
      FileNotFoundError: no such file; ValueError: unreadable, wrong shape, non-finite values, or
        computed for another gap than `flow_gap` (when given).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"flow file {path} is missing: run python -m data_prep.compute_flow first")
    try:
        with np.load(path) as data:
            flow, names = data["flow"].astype(np.float32), [str(n) for n in data["frames"]]
            stored_gap = int(data["flow_gap"]) if "flow_gap" in data else None
            frame_size = tuple(int(n) for n in data["frame_size"]) if "frame_size" in data else flow.shape[1:3]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read flow file {path}: {e}") from e
    if flow.ndim != 4 or flow.shape[-1] != 2 or len(names) != flow.shape[0]:
        raise ValueError(f"flow file {path} holds {flow.shape} for {len(names)} frames; expected [T, H, W, 2]")
    if not np.isfinite(flow).all():
        raise ValueError(f"flow file {path} contains NaN or infinite values")
    if flow_gap is not None and stored_gap is not None and stored_gap != flow_gap:
        raise ValueError(f"flow file {path} was computed with --flow_gap={stored_gap}, not {flow_gap}")
    return FlowFile(flow, names, frame_size)


def _exit_when_orphaned(parent_pid: int, poll_seconds: float) -> None:
    """Ends this process (exit status 1) once its parent is no longer `parent_pid`; polls getppid."""
    while os.getppid() == parent_pid:
        time.sleep(poll_seconds)
    os._exit(1)


def _end_with_parent(parent_pid: int) -> None:
    """Pool initializer: the worker ends when the process `parent_pid` that started it dies.

    A killed parent (SIGKILL included) cannot stop its pool, so the worker arranges its own end: on
    Linux the kernel sends it SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); everywhere, a
    daemon thread exits the worker within `_ORPHAN_POLL_SECONDS` of it being re-parented. A worker
    killed mid-video leaves only a temporary file, which is never taken for a result.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # On failure the thread below still acts.
    if os.getppid() != parent_pid:  # The parent died before the signal was armed.
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid, _ORPHAN_POLL_SECONDS), daemon=True).start()


def compute_all(
    frames_root: str | Sequence[str], output: str, flow_gap: int, workers: int, flow_size: int = 0
) -> list[str]:
    """Flow for every video of frames_root (one folder or several, `video_files.list_videos`), in
    `workers` processes, with a progress bar."""
    if flow_gap < 1 or flow_size < 0:
        raise ValueError(f"need --flow_gap >= 1 and --flow_size >= 0, got {flow_gap} and {flow_size}")
    videos = video_files.list_videos(frames_root)
    os.makedirs(output, exist_ok=True)
    todo = [v for v in videos if not os.path.exists(flow_path(output, v.name))]
    print(f"{len(videos) - len(todo)} of {len(videos)} videos already done; computing {len(todo)}")
    if workers <= 1:
        for entry in tqdm.tqdm(todo, desc="flow", unit="video"):
            compute_video(entry, output, flow_gap, flow_size)
    else:
        # Spawned, not forked: the caller may have started threads (JAX does) that fork would copy.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_end_with_parent, initargs=(os.getpid(),)
        ) as pool:
            futures = [pool.submit(compute_video, v, output, flow_gap, flow_size) for v in todo]
            for future in tqdm.tqdm(
                concurrent.futures.as_completed(futures), total=len(futures), desc="flow", unit="video"
            ):
                future.result()
    return [flow_path(output, v.name) for v in videos]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    compute_all(f.frames_root, f.output, f.flow_gap, f.workers, f.flow_size)


if __name__ == "__main__":
    flags.DEFINE_list(
        "frames_root", None, "Folder of frame folders and/or MP4/AVI files, one per video; several comma-separated."
    )
    flags.DEFINE_string("output", None, "Where to write <video>.npz flow files.")
    flags.DEFINE_integer("flow_gap", 1, "Flow of frame t points to frame t - flow_gap.")
    flags.DEFINE_integer("flow_size", 0, "Compute flow on frames resized to this square size; 0: their own size.")
    flags.DEFINE_integer("workers", os.cpu_count() or 1, "Parallel processes.")
    flags.mark_flags_as_required(["frames_root", "output"])
    app.run(main)
