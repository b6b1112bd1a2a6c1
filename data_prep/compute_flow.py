"""Optical-flow pre-computation for training with flow fusion.

  python -m data_prep.compute_flow --frames_root=PATH --output=FLOWDIR [--flow_gap=1] [--workers=N]

`frames_root` holds one folder of frames per video (YouTube-VOS `train_all_frames/JPEGImages`,
DAVIS `JPEGImages/480p`, ...). For every video this writes `FLOWDIR/<video>.npz` with
`flow` float16 [T, H, W, 2] (frame t to frame t - flow_gap, pixels, (dx, dy); zero for
t < flow_gap; OpenCV DIS, `mer_jax.flow.dis_flow`) and `frames` (the frame file names).

Storage: float16 in a compressed npz. For |flow| < 64 px the rounding error is at most
0.016 px (half the float16 spacing 2^-5 at 32-64 px; smaller for smaller vectors), far below
DIS's own error; vectors beyond the float16 range (65,504 px) cannot occur in real frames.
Resumable: videos whose .npz exists are skipped; each file is written to a temporary name and
renamed when complete, so a killed run never leaves a half-written flow file behind.
"""

import concurrent.futures
import os

import numpy as np
import tqdm
from absl import app, flags

from mer_jax import flow as flow_lib
from mer_jax.evaluation import frames_io

SUFFIX = ".npz"


def video_names(frames_root: str) -> list[str]:
    """Sorted names of the video folders under frames_root."""
    if not os.path.isdir(frames_root):
        raise FileNotFoundError(f"--frames_root {frames_root} is not a folder of video frame folders")
    names = sorted(n for n in os.listdir(frames_root) if os.path.isdir(os.path.join(frames_root, n)))
    if not names:
        raise FileNotFoundError(f"no video folders in {frames_root}")
    return names


def compute_video(frames_root: str, video: str, output: str, flow_gap: int) -> str:
    """Computes and atomically writes one video's flow; returns the file written (or found)."""
    path = os.path.join(output, video + SUFFIX)
    if os.path.exists(path):
        return path
    folder = os.path.join(frames_root, video)
    names = frames_io.list_frames(folder)
    frames = frames_io.read_frames([os.path.join(folder, n) for n in names])
    flow = flow_lib.dis_flow(frames, flow_gap)
    temporary = os.path.join(output, f".{video}.{os.getpid()}.tmp{SUFFIX}")
    np.savez_compressed(temporary, flow=flow.astype(np.float16), frames=np.asarray(names))
    os.replace(temporary, path)
    return path


def load_flow(path: str) -> tuple[np.ndarray, list[str]]:
    """(flow float32 [T, H, W, 2], frame names) of a file written by `compute_video`.

    Raises:
      FileNotFoundError: no such file; ValueError: unreadable, wrong shape, or non-finite values.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"flow file {path} is missing: run python -m data_prep.compute_flow first")
    try:
        with np.load(path) as data:
            flow, names = data["flow"].astype(np.float32), [str(n) for n in data["frames"]]
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"cannot read flow file {path}: {e}") from e
    if flow.ndim != 4 or flow.shape[-1] != 2 or len(names) != flow.shape[0]:
        raise ValueError(f"flow file {path} holds {flow.shape} for {len(names)} frames; expected [T, H, W, 2]")
    if not np.isfinite(flow).all():
        raise ValueError(f"flow file {path} contains NaN or infinite values")
    return flow, names


def compute_all(frames_root: str, output: str, flow_gap: int, workers: int) -> list[str]:
    """Flow for every video of frames_root (in `workers` processes), with a progress bar."""
    if flow_gap < 1:
        raise ValueError(f"--flow_gap must be >= 1, got {flow_gap}")
    videos = video_names(frames_root)
    os.makedirs(output, exist_ok=True)
    todo = [v for v in videos if not os.path.exists(os.path.join(output, v + SUFFIX))]
    print(f"{len(videos) - len(todo)} of {len(videos)} videos already done; computing {len(todo)}")
    with concurrent.futures.ProcessPoolExecutor(max(workers, 1)) as pool:
        futures = [pool.submit(compute_video, frames_root, v, output, flow_gap) for v in todo]
        for future in tqdm.tqdm(
            concurrent.futures.as_completed(futures), total=len(futures), desc="flow", unit="video"
        ):
            future.result()
    return [os.path.join(output, v + SUFFIX) for v in videos]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    compute_all(f.frames_root, f.output, f.flow_gap, f.workers)


if __name__ == "__main__":
    flags.DEFINE_string("frames_root", None, "Folder with one folder of frames per video.")
    flags.DEFINE_string("output", None, "Where to write <video>.npz flow files.")
    flags.DEFINE_integer("flow_gap", 1, "Flow of frame t points to frame t - flow_gap.")
    flags.DEFINE_integer("workers", os.cpu_count() or 1, "Parallel processes.")
    flags.mark_flags_as_required(["frames_root", "output"])
    app.run(main)
