"""MER on real video: trains from a dataset `data_prep` builds from folders of video clips and scores
DAVIS J&F (the trained encoder, its VEN-refined queries, and the copy and lab floors) during training.

  python -m mer_jax.train --config=configs/real.py:cpu --workdir=DIR --config.data.data_dir=TFDS_DIR \
      --config.evals.davis.davis_root=PATH/DAVIS [--config.evals.davis.sequences=a,b]

The dataset is `real_clips` (README, 'Training on real video': `data_prep.compute_flow` and
`data_prep.build --dataset=folder --name=real_clips --image_size=256`). Every MER module and
hyper-parameter not set here is configs/ytvos.py's.

Variants:
  (default): the paper's model at 256x256, batch 32, bfloat16, 3,000 steps, for one GPU; DAVIS-2017
    val with the `mer` preset every 1,000 steps and at the end.
  `:cpu`: the narrow widths of configs/demo.py at 96x96, batch 8, 300 steps on 2 CPU cores; two
    sequences of the DAVIS-2016 sample (`ImageSets/2016/sample.txt`) at 480p with the `mer` preset
    at the end, without the VEN path (another DAVIS split: set evals.davis.year, .subset and
    .sequences; the default variant scores all of DAVIS-2017 val).
  `:debug`: tiny, for tests (seconds on a CPU).
"""

import ml_collections

from configs import demo, propagation, ytvos


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ytvos.get_config()
    config.data.source = "tfds"
    config.data.name = "real_clips"  # data_prep.build --name=real_clips
    config.num_train_steps = 3000
    config.compute_dtype = "bfloat16"
    config.checkpoint_every_steps = 500
    config.evals.davis = davis_eval()
    config.evals.davis.every_steps = 1000
    if arg == "cpu":
        shrink_for_cpu(config)
    elif arg == "debug":
        ytvos.shrink_for_tests(config)
        config.data.source = "tfds"  # Tests build a tiny dataset from generated videos.
        config.num_train_steps = 2
        config.compute_dtype = "float32"
        config.evals.davis.every_steps = None
        config.evals.davis.at_end = False  # Tests that evaluate turn it on.
        config.evals.davis.feature_batch = 2
        config.evals.davis.presets.mer.radius = 2  # The 12x16 feature grid of tests' 48x64 frames.
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/real.py, :cpu or :debug")
    return config


def shrink_for_cpu(config: ml_collections.ConfigDict) -> None:
    """configs/demo.py's widths and loss weights at 96x96, 300 steps, then two DAVIS-2016 sample
    sequences at 480p scored for the encoder and both floors: 19 minutes on 2 CPU cores, its first
    100 steps sharing them with another job (README, 'Training on real video')."""
    config.batch_size = 8
    config.num_train_steps = 300
    config.compute_dtype = "float32"  # A CPU has no fast bfloat16 path.
    config.log_every_steps = 50
    config.checkpoint_every_steps = 200
    config.data.image_size = 96  # Read from the 256x256 dataset, resized with the flow (TfdsSource).
    config.data.num_workers = 2
    demo.narrow_for_cpu(config)
    config.evals.davis.every_steps = None
    config.evals.davis.year = "2016"
    config.evals.davis.subset = "sample"
    # Two of the sample's four sequences (90 frames), and not the VEN path: at 480p this CPU
    # propagates about 2-3 s per frame for the lab floor and the encoder, about 20 s with the VEN.
    # --config.evals.davis.sequences=blackswan,car-shadow,dog,bmx-trees scores all four,
    # --config.evals.davis.score_ven=True the VEN path.
    config.evals.davis.sequences = "blackswan,car-shadow"
    config.evals.davis.score_ven = False


def davis_eval() -> ml_collections.ConfigDict:
    """`config.evals.davis` (`propagation.training_eval`): J&F of label propagation on a DAVIS root
    at 480p (required: --config.evals.davis.davis_root=PATH/DAVIS), for the trained encoder, its
    VEN-refined queries (models with a VEN; `score_ven`: its attention from every query to every
    pooled reference key makes it the slowest path at 480p on a CPU) and the copy and lab floors;
    TensorBoard `davis/...`, results in `WORKDIR/eval_davis/`."""
    return propagation.training_eval("davis")
