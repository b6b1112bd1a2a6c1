"""Builds the TFDS training dataset of whole videos (frames, flow, video id) read by training.

  python -m data_prep.build --dataset=ytvos --frames_root=YTVOS/train_all_frames/JPEGImages \
      --flow_root=FLOWDIR --data_dir=TFDS_DIR [--image_size=256] [--skip_bad] [--workers=N]

`--dataset=davis` takes DAVIS `JPEGImages/480p` (the 2017 train split by default),
`--dataset=folder` any folder of frame folders and/or MP4/AVI files. `--frames_root=A,B` pools the
videos of several folders into one dataset (names must be unique across them). Flow comes from
`python -m data_prep.compute_flow --output=FLOWDIR` run on the same frames root; without
`--flow_root` it is computed here with OpenCV DIS. The format is described in
`mer_jax/data/video_dataset.py`; the dataset is written to TFDS_DIR/<name>/1.0.0 (`--name`, default
the dataset kind: set config.data.name to it). Frames are stored resized to image_size x image_size
(the training size; 0 keeps them as they are), never cropped, with flow resized and rescaled to
match. A bad video (unreadable frame, too few frames, missing, NaN or mis-sized flow) stops the
build with a message naming it and the file; with --skip_bad it is left out and listed at the end.
No TensorFlow needed.
"""

import collections
import concurrent.futures
import multiprocessing
import os
import re
import shutil
import time
from typing import Iterator, NamedTuple, Sequence

import cv2
import numpy as np
import tqdm
from absl import app, flags

from data_prep import compute_flow, video_builder
from mer_jax.data import flow as flow_lib
from mer_jax.data import resize, video_files


class BuildOptions(NamedTuple):
    """How each video is turned into examples (see the flags)."""

    flow_root: str | None
    flow_gap: int
    image_size: int
    min_frames: int
    jpeg_quality: int


def _load_flow(entry: video_files.VideoEntry, frame_names: list[str], frame_size: tuple[int, int], options):
    """The pre-computed flow [T, h, w, 2] of a video, checked against its frames."""
    path = compute_flow.flow_path(options.flow_root, entry.name)
    try:
        stored = compute_flow.load_flow(path, options.flow_gap)
    except (OSError, ValueError) as e:
        raise video_files.BadVideoError(f"video {entry.name}: {e}") from e
    if stored.frames != frame_names:
        raise video_files.BadVideoError(
            f"video {entry.name}: flow file {path} was computed for {len(stored.frames)} frames "
            f"({stored.frames[:2]}...), the video has {len(frame_names)} ({frame_names[:2]}...): recompute it with "
            "data_prep.compute_flow"
        )
    if stored.frame_size != tuple(frame_size):
        (fh, fw), (h, w) = stored.frame_size, frame_size
        raise video_files.BadVideoError(
            f"video {entry.name}: flow file {path} was computed from {fw}x{fh} frames but the frames in "
            f"{entry.path} are {w}x{h}: recompute the flow from these frames"
        )
    return stored.flow


def prepare_video(entry: video_files.VideoEntry, options: BuildOptions) -> video_builder.PreparedVideo:
    """Reads, checks, resizes and encodes one video.

    Raises:
      video_files.BadVideoError: naming the video and the file at fault.
    """
    frames, names = video_files.read_video(entry)
    if len(frames) < options.min_frames:
        raise video_files.BadVideoError(
            f"video {entry.name}: {entry.path} has {len(frames)} frames, fewer than a training clip needs "
            f"(--min_frames={options.min_frames})"
        )
    if options.flow_root:
        flow = _load_flow(entry, names, frames.shape[1:3], options)
    else:
        flow = flow_lib.dis_flow(frames, options.flow_gap)
    size = (options.image_size, options.image_size) if options.image_size else frames.shape[1:3]
    jpegs = []
    for frame in frames:
        bgr = cv2.cvtColor(resize.resize_frame(frame, size), cv2.COLOR_RGB2BGR)
        jpegs.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, options.jpeg_quality])[1].ravel())
    flow = np.stack([resize.resize_flow(f, size) for f in flow]).astype(np.float16)
    return video_builder.PreparedVideo(entry.name, jpegs, flow)


def _prepare_or_report(entry, options, skip_bad):
    try:
        return prepare_video(entry, options)
    except video_files.BadVideoError as e:
        if not skip_bad:
            raise
        return str(e)


def prepared_videos(
    entries: list[video_files.VideoEntry], options: BuildOptions, workers: int, skip_bad: bool
) -> Iterator[video_builder.PreparedVideo | str]:
    """Each video prepared in order, `workers` processes at a time (with skip_bad, a bad video
    gives its error message instead)."""
    if workers <= 1:
        for entry in tqdm.tqdm(entries, desc="build", unit="video"):
            yield _prepare_or_report(entry, options, skip_bad)
        return
    # Spawned, not forked: the caller may have started threads (JAX does) that fork would copy.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending = collections.deque()
        for entry in tqdm.tqdm(entries, desc="build", unit="video"):
            pending.append(pool.submit(_prepare_or_report, entry, options, skip_bad))
            if len(pending) > 2 * workers:  # Bounded, so memory holds a few videos, not all.
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def build(
    dataset: str,
    frames_root: str | Sequence[str],
    data_dir: str,
    *,
    flow_root: str | None = None,
    name: str | None = None,
    video_list: str | None = None,
    flow_gap: int = 1,
    image_size: int = 256,
    min_frames: int = 5,
    jpeg_quality: int = 90,
    workers: int = 1,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> tuple[str, list[str]]:
    """Builds the dataset; returns (its folder, messages of the videos skipped).

    `frames_root` is one folder or several whose videos are pooled (`video_files.list_videos`).

    Raises:
      video_files.BadVideoError: without skip_bad, the first bad video.
      FileExistsError: the dataset exists and overwrite is False.
    """
    name = name or dataset
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"--name must be lower_snake_case (a TFDS dataset name), got {name!r}")
    if flow_gap < 1 or min_frames < 1 or image_size < 0:
        raise ValueError(
            f"need flow_gap >= 1, min_frames >= 1, image_size >= 0; got {flow_gap}, {min_frames}, {image_size}"
        )
    entries = video_files.list_videos(frames_root, dataset, video_list)
    if flow_root and not os.path.isdir(flow_root):
        raise FileNotFoundError(f"--flow_root {flow_root} does not exist: run python -m data_prep.compute_flow first")
    data_dir = os.path.expanduser(data_dir)
    target = os.path.join(data_dir, name)
    if os.path.exists(target):
        if not overwrite:
            raise FileExistsError(f"{target} already exists: delete it or pass --overwrite")
        shutil.rmtree(target)
    options = BuildOptions(flow_root, flow_gap, image_size, min_frames, jpeg_quality)
    metadata = dict(dataset=dataset, flow_gap=flow_gap, image_size=image_size, jpeg_quality=jpeg_quality)
    try:
        return video_builder.write_dataset(
            name, prepared_videos(entries, options, workers, skip_bad), metadata, data_dir
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # Nothing half-written is left behind.
        raise


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    start = time.perf_counter()
    path, skipped = build(
        f.dataset, f.frames_root, f.data_dir, flow_root=f.flow_root, name=f.name, video_list=f.video_list,
        flow_gap=f.flow_gap, image_size=f.image_size, min_frames=f.min_frames, jpeg_quality=f.jpeg_quality,
        workers=f.workers, skip_bad=f.skip_bad, overwrite=f.overwrite,
    )  # fmt: skip
    print(f"Built {path} in {time.perf_counter() - start:.1f} s.")
    if skipped:
        print(f"Skipped {len(skipped)} bad videos:")
        for message in skipped:
            print(f"  {message}")


if __name__ == "__main__":
    flags.DEFINE_enum("dataset", None, list(video_files.DATASETS), "Layout of --frames_root.")
    flags.DEFINE_list("frames_root", None, "Folder of the videos, or several comma-separated (pooled).")
    flags.DEFINE_string("data_dir", None, "TFDS data dir to write the dataset into (config.data.data_dir).")
    flags.DEFINE_string("flow_root", None, "Flow files from data_prep.compute_flow; unset: computed here (DIS).")
    flags.DEFINE_string("name", None, "Dataset name (config.data.name); default: the --dataset value.")
    flags.DEFINE_string("video_list", None, "File of video names to keep; davis default: ImageSets/2017/train.txt.")
    flags.DEFINE_integer("flow_gap", 1, "Flow of frame t points to frame t - flow_gap (config.data.flow_gap).")
    flags.DEFINE_integer("image_size", 256, "Store frames resized to this square size; 0 keeps their size.")
    flags.DEFINE_integer("min_frames", 5, "Fewest frames a video needs (1 + num_refs * min(frame_gaps)).")
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames.")
    flags.DEFINE_integer("workers", os.cpu_count() or 1, "Processes preparing videos in parallel.")
    flags.DEFINE_bool("skip_bad", False, "Leave bad videos out and list them at the end, instead of stopping.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing dataset of the same name.")
    flags.mark_flags_as_required(["dataset", "frames_root", "data_dir"])
    app.run(main)
