"""Procedural videos with exact point tracks, written as a TAP-Vid pickle.

  python -m data_prep.synthetic_tapvid --output=/tmp/synthetic_tapvid.pkl [--num_videos=8] \
      [--num_frames=24] [--size=256] [--num_points=32] [--kind=easy] [--seed=0]

The pickle is a dict {"synthetic_<i>": {"video", "points", "occluded"}} like tapvid_davis.pkl
(`mer_jax/evaluation/tapvid_data.py`); the tracks are exact (`mer_jax/data/synthetic_tracks.py`),
so `python -m mer_jax.evaluate --config=configs/tapvid.py --config.tapvid_path=<output>` scores
point tracking end to end with no download. An existing file is replaced only with `--overwrite`.
"""

import os

from absl import app, flags

from mer_jax.data import synthetic_tracks
from mer_jax.evaluation.benchmarks.tapvid import data as tapvid_data

flags.DEFINE_string("output", None, "The pickle to write.")
flags.DEFINE_integer("num_videos", 8, "Videos to generate.")
flags.DEFINE_integer("num_frames", 24, "Frames per video.")
flags.DEFINE_integer("size", 256, "Frame side in pixels (square frames).")
flags.DEFINE_integer("num_points", 32, "Tracks per video (each sampled at a random pixel of a random frame).")
flags.DEFINE_enum("kind", "easy", ["easy", "camouflage"], "Procedural video kind (docs/synthetic.md).")
flags.DEFINE_integer("seed", 0, "Base seed: the same seed and flags give the same pickle.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
flags.mark_flags_as_required(["output"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    if os.path.exists(values.output) and not values.overwrite:
        raise app.UsageError(f"{values.output} exists: pass --overwrite to replace it, or choose another --output")
    examples = synthetic_tracks.tapvid_examples(
        values.seed,
        values.num_videos,
        num_points=values.num_points,
        num_frames=values.num_frames,
        height=values.size,
        width=values.size,
        kind=values.kind,
    )
    tapvid_data.write_pickle(values.output, examples)
    print(f"wrote {len(examples)} videos, {values.num_points} tracks each, to {values.output}")


if __name__ == "__main__":
    app.run(main)
