"""Input pipeline throughput: clips/s read from a built TFDS dataset at the paper's size.

  python bench/input_pipeline.py [--data_dir=TFDS_DIR --name=ytvos] [--workers=1,2,4] [--steps=5] [--json=PATH]

Without --data_dir it first builds a dataset of 16 generated 256x256 videos of 40 frames (exact
flow) in a temporary folder and reports the build time. For each number of reader threads it
times `ClipLoader.load` (3-frame clips with flow, batch 32, resized to 256x256, as configs/ytvos.py
trains) after one warm-up batch, and compares with the train step's consumption when
--train_step_json (from bench/train_step.py) is given. JSON: {"build_s": s or null,
"frames": n, "runs": [{"workers": n, "batch_s": s, "clips_per_s": c}, ...]}.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import ytvos  # noqa: E402
from data_prep import build  # noqa: E402
from mer_jax import input_pipeline  # noqa: E402
from mer_jax.data import synthetic_video, video_dataset  # noqa: E402


def build_generated(root: str, num_videos: int, num_frames: int, size: int) -> float:
    """Writes generated videos (JPEG folders + exact flow files) and builds them; returns seconds."""
    names = [f"{t:05d}.jpg" for t in range(num_frames)]
    os.makedirs(os.path.join(root, "flow"))
    for i, clip in enumerate(synthetic_video.generate_videos(0, num_videos, num_frames=num_frames, height=size,
                                                             width=size, num_objects=3)):  # fmt: skip
        folder = os.path.join(root, "frames", f"video_{i:03d}")
        os.makedirs(folder)
        for name, frame in zip(names, clip.frames):
            cv2.imwrite(os.path.join(folder, name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        np.savez(os.path.join(root, "flow", f"video_{i:03d}.npz"), flow=clip.flow.astype(np.float16),
                 frames=np.asarray(names), flow_gap=1)  # fmt: skip
    start = time.perf_counter()
    build.build("ytvos", os.path.join(root, "frames"), os.path.join(root, "tfds"), flow_root=os.path.join(root, "flow"),
                image_size=size, workers=2)  # fmt: skip
    return time.perf_counter() - start


def time_loader(source, config, workers: int, steps: int) -> dict:
    loader = input_pipeline.ClipLoader(
        source, global_batch=config.batch_size, process_index=0, process_count=1, seed=0,
        num_refs=config.data.num_refs, frame_gaps=tuple(config.data.frame_gaps), gap_probs=tuple(config.data.gap_probs),
        clips_per_video=config.data.clips_per_video, prefetch=1, with_flow=True, num_workers=workers,
    )  # fmt: skip
    loader.load(0)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loader.load(step)
    batch_s = (time.perf_counter() - start) / steps
    return {"workers": workers, "batch_s": batch_s, "clips_per_s": config.batch_size / batch_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--name", default="ytvos")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--train_step_json", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    config = ytvos.get_config()
    with tempfile.TemporaryDirectory() as root:
        build_s, data_dir = None, args.data_dir
        if data_dir is None:
            build_s = build_generated(root, num_videos=16, num_frames=40, size=config.data.image_size)
            data_dir = os.path.join(root, "tfds")
        source = video_dataset.TfdsSource(data_dir, args.name, config.data.image_size, config.data.flow_gap)
        runs = [time_loader(source, config, int(w), args.steps) for w in args.workers.split(",")]
    result = {"build_s": build_s, "frames": int(source.lengths.sum()), "runs": runs}
    if build_s is not None:
        print(f"built {result['frames']} frames in {build_s:.1f} s ({1000 * build_s / result['frames']:.1f} ms/frame)")
    print(f"| reader threads | batch ({config.batch_size} clips) s | clips/s |\n|---|---|---|")
    for run in runs:
        print(f"| {run['workers']} | {run['batch_s']:.3f} | {run['clips_per_s']:.1f} |")
    if args.train_step_json:
        with open(args.train_step_json) as f:
            for spec, timing in json.load(f).items():
                step_clips = timing["batch_size"] / timing["step_s"]
                print(f"train step {spec}: consumes {step_clips:.1f} clips/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
