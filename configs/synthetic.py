"""Label propagation on held-out procedural videos: J&F, as the demo scores itself during training.

  python -m mer_jax.evaluate --config=configs/synthetic.py --config.checkpoint=DIR \
      [--config.kind=camouflage --config.image_size=128]

No download: the videos are generated from `seed` (docs/synthetic.md). `fields()` is the
benchmark's own section, also `config.evals.synthetic` during training (`propagation.training_eval`),
where image_size, flow_gap and kind left None take the training data's values.
"""

import ml_collections
from ml_collections import config_dict

from configs import propagation

# A window local for the 16x16 feature grid of 64x64 frames (radius at most a quarter of the grid
# side; the benchmark refuses wider ones).
PRESET = "mer_small"


def fields() -> ml_collections.ConfigDict:
    """The synthetic benchmark's own fields (`benchmarks/synthetic/evaluator.py`)."""
    fields = ml_collections.ConfigDict()
    fields.num_videos = 16
    fields.num_frames = 24
    fields.num_objects = 3
    fields.seed = 1_000_003  # Held out: training videos come from config.seed.
    fields.image_size = config_dict.placeholder(int)  # Square side in pixels.
    fields.flow_gap = config_dict.placeholder(int)  # Flow of frame t points to frame t - flow_gap.
    fields.kind = config_dict.placeholder(str)  # 'easy' or 'camouflage' (docs/synthetic.md).
    return fields


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = propagation.benchmark_config("synthetic", PRESET, fields())
    config.image_size, config.flow_gap, config.kind = 64, 1, "easy"  # configs/demo.py's videos.
    if arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/synthetic.py")
    return config
