"""MER on the embedded procedural videos: the no-download demo (a few minutes on 2 CPU cores).

  python -m mer_jax.train --config=configs/demo.py --workdir=/tmp/mer_demo

Variants: `configs/demo.py:camouflage` trains and evaluates on the `camouflage` procedural videos
(objects textured like the background, separable only by their motion; docs/synthetic.md) at
128x128 with 32 held-out videos; `configs/demo.py:debug` is a tiny version for tests.
"""

import ml_collections

from configs import ytvos


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ytvos.get_config()
    config.batch_size = 8
    config.num_train_steps = 500
    config.log_every_steps = 25
    config.checkpoint_every_steps = 100
    config.data.source = "synthetic"
    config.data.image_size = 64
    config.data.synthetic.num_videos = 64
    config.data.synthetic.num_frames = 24
    config.data.synthetic.num_objects = 3
    narrow_for_cpu(config)
    config.evals.synthetic = ytvos.synthetic_eval()
    if arg == "camouflage":
        config.data.synthetic.kind = "camouflage"
        config.data.image_size = 128
        config.model.reconstruction.radius = 6
        config.evals.synthetic.num_videos = 32
    elif arg == "debug":
        ytvos.shrink_for_tests(config)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/demo.py, :camouflage or :debug")
    return config


def narrow_for_cpu(config: ml_collections.ConfigDict) -> None:
    """The demo's model and loss sizes for small frames on a CPU: narrow widths, radius 4, a small
    memory bank, lambda_pn 0.01 (value-map windows scale with the grid: 2 on the 16x16 grid of
    64x64 frames, 3 at 96x96, 4 at 128x128)."""
    config.model.encoder.embed_dim = 32
    config.model.encoder.stem_width = 16
    config.model.encoder.stage_widths = (16, 32, 64, 64)
    config.model.reconstruction.radius = 4
    config.memory.bank_frames = 256
    config.memory.bank_pixels = 32
    config.memory.num_negatives = 512
    # At 64x64 and 500 steps the paper's lambda_pn=0.1 lets the positive/negative term dominate
    # and the reconstruction error rises (bench/RESULTS.md); 0.01 keeps the demo learning.
    config.loss.lambda_pn = 0.01
