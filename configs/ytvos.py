"""The paper's training recipe on YouTube-VOS (ResNet-18, 256x256, batch 32, 20 epochs).

  python -m mer_jax.train --config=configs/ytvos.py --workdir=DIR \
      --config.data.data_dir=PATH_TO_PREPARED_DATASET

Variants: `configs/ytvos.py:debug` is a tiny version for tests (seconds on a CPU).
"""

import ml_collections
from ml_collections import config_dict

from configs import propagation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 32
    config.num_epochs = 20
    config.num_train_steps = config_dict.placeholder(int)  # None: num_epochs epochs.
    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.progress_bar = True
    # float32, or bfloat16 on GPU/TPU: the encoder and VEN compute in it; parameters, optimizer
    # state, BatchNorm statistics, affinities, softmaxes and losses stay float32.
    config.compute_dtype = "float32"
    # Recompute the encoder's blocks and the reconstruction affinities in the backward pass
    # instead of storing them: less memory for about one more forward.
    config.remat = False

    config.data = ml_collections.ConfigDict()
    config.data.source = "tfds"  # 'tfds' (prepared by data_prep) or 'synthetic' (embedded).
    config.data.data_dir = "~/tensorflow_datasets"
    config.data.name = "ytvos"
    config.data.image_size = 256
    config.data.num_refs = 2
    config.data.frame_gaps = (2, 3, 5)
    config.data.gap_probs = (0.4, 0.4, 0.2)
    config.data.clips_per_video = 1  # An epoch draws this many clips from every video.
    config.data.flow_gap = 1  # Flow of frame t points to frame t - flow_gap.
    config.data.prefetch = 2  # Batches prepared ahead of the train step.
    config.data.num_workers = 4  # Threads reading the clips of a batch.
    config.data.lab_mean = (50.0, 0.0, 0.0)
    config.data.lab_std = (50.0, 127.0, 127.0)
    config.data.synthetic = ml_collections.ConfigDict()
    config.data.synthetic.num_videos = 64
    config.data.synthetic.num_frames = 24
    config.data.synthetic.num_objects = 3
    config.data.synthetic.kind = "easy"  # 'easy' or 'camouflage', see docs/synthetic.md.

    config.model = ml_collections.ConfigDict()
    config.model.encoder = ml_collections.ConfigDict()
    config.model.encoder.embed_dim = 64
    config.model.encoder.stem_width = 64
    config.model.encoder.stage_widths = (64, 128, 256, 256)
    config.model.encoder.bn_mode = "frozen"
    config.model.encoder.pos_embed = False
    # MER's contributions (docs/method.md); all off is the MAST-style baseline of Table 4.
    config.model.use_flow = True
    config.model.use_ven = True
    config.model.use_sampler = True
    config.model.use_weight_map = True
    config.model.use_pos_neg = True
    config.model.flow = ml_collections.ConfigDict()
    # Ours (docs/method.md, 'Flow fusion'): flow as two input channels of its own at a fixed scale
    # (motion of model.flow.scale of the image side per flow gap encodes as 1). The paper's
    # reading is encoding='color' (added to the colour channels, normalised per image) with
    # alpha_init=0.1.
    config.model.flow.encoding = "channels"
    config.model.flow.alpha_init = 1.0
    config.model.flow.scale = 0.02
    # The potential value map of the VEN and of the weight map (use_ven or use_weight_map).
    # Ours (docs/method.md, 'Value Extraction Network'): the paper's 8x8 windows are meant for the
    # 64x64 feature grid of 256x256 frames and scale with the grid's shorter side (8 windows per
    # side; 0: the window in feature pixels as given), and beta = 1 scores a static window 0
    # (0.6, the first reading, kept the texture's self-similarity: chance AUC, bench/RESULTS.md).
    config.model.value_map = ml_collections.ConfigDict()
    config.model.value_map.window = 8
    config.model.value_map.beta = 1.0
    config.model.value_map.grid_reference = 64
    config.model.ven = ml_collections.ConfigDict()
    config.model.ven.num_heads = 4
    config.model.ven.kv_pool = 2
    config.model.ven.query_chunk = 1024
    # Each query chunk's kernel: 'fused' (jax.nn.dot_product_attention, JAX's choice of
    # implementation) or 'chunked' (einsum, softmax, einsum); the same result, DropKey included
    # (tests/models/test_ven.py), and the same CPU time (bench/ven_attention.py).
    config.model.ven.attention = "fused"
    config.model.ven.radius = config_dict.placeholder(int)  # None: global attention over the pooled refs.
    config.model.ven.dropkey_rate = 0.1
    # Ours (docs/method.md, 'Value Extraction Network'): the output projection starts at zero, so
    # the VEN starts as the identity and the encoder keeps carrying the matching.
    config.model.ven.zero_init_out = True
    config.model.sampler = ml_collections.ConfigDict()
    config.model.sampler.num_clusters = 5
    config.model.sampler.kmeans_iters = 10
    config.model.sampler.cluster_xy_weight = 1.0
    config.model.sampler.grow_threshold = 0.45
    config.model.sampler.shrink = 0.5
    config.model.sampler.expand = 1.5
    config.model.sampler.radius_min = 2
    config.model.sampler.radius_max = 12
    # Ours (docs/method.md, 'Multi-cluster sampler'): radius_min/max are the paper's, for the 64x64
    # feature grid of 256x256 frames, and scale with the grid's shorter side (0: feature
    # pixels as given); regions grow on centred features (each frame's mean feature subtracted).
    config.model.sampler.grid_reference = 64
    config.model.sampler.center_features = True
    config.model.reconstruction = ml_collections.ConfigDict()
    config.model.reconstruction.radius = 6  # Without the sampler; with it, the sampler's scaled radius_max.
    config.model.reconstruction.temperature = 1.0
    config.model.reconstruction.ref_fusion = "joint"
    config.model.reconstruction.tile = 8

    config.loss = ml_collections.ConfigDict()
    config.loss.loss_scale = 30.0
    config.loss.loss_channels = "dropped"
    config.loss.gamma_ramp_steps = config_dict.placeholder(int)  # None: the whole run.
    # Ours (docs/method.md): with use_ven, the reconstruction with the encoder's own target features
    # as query is added with this weight, so the features evaluated without the VEN are trained
    # for matching (0: only the VEN-refined query reconstructs, the paper's reading).
    config.loss.encoder_recon_weight = 1.0
    config.loss.lambda_pn = 0.1
    # lambda_pn rises linearly from 0 over this many steps (0: the full weight from the start).
    config.loss.pn_warmup_steps = 0
    # The positives of the joint softmax: 'window' (every pixel of the local windows: ours) or
    # 'best' (the window pixel of highest affinity: the paper's single positive).
    config.loss.pn_positive = "window"
    config.loss.pn_recon_weight = 1.0
    # Ours (docs/decisions.md): the positive/negative softmax on L2-normalised features at this
    # temperature; the paper's reading is pn_normalize=False, pn_temperature=1.0 (raw features).
    config.loss.pn_normalize = True
    config.loss.pn_temperature = 0.07

    config.memory = ml_collections.ConfigDict()
    config.memory.bank_frames = 3250
    config.memory.bank_pixels = 256
    config.memory.num_negatives = 4096

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 1e-3
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.weight_decay = 1e-5
    config.optim.final_lr_fraction = 0.2

    # Evaluations during training: config.evals.<name> (a key of
    # mer_jax.evaluation.benchmark_run.BENCHMARKS) is `propagation.training_eval(name)`: `every_steps`
    # (None: not periodically), `at_end` (after the last step), `score_ven` and the benchmark's section,
    # the fields `mer_jax.evaluate` takes. `synthetic_eval()` is the demo's.
    config.evals = ml_collections.ConfigDict()

    # Module diagnostics at every log step (mer_jax/diagnostics.py), on probe_clips clips of
    # held-out procedural videos (data.synthetic's fields), whatever data.source is.
    config.diagnostics = ml_collections.ConfigDict()
    config.diagnostics.probe_clips = 8
    config.diagnostics.probe_seed = 2_000_003  # Held out: training videos come from config.seed.
    # TensorBoard image `diagnostics/probe` at every log step: this many probe clips, one row each
    # (target, objects, flow, value map, weight map, sampler regions; diagnostic_images.py). 0: none.
    config.diagnostics.image_clips = 4

    if arg == "debug":
        shrink_for_tests(config)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/ytvos.py or configs/ytvos.py:debug")
    return config


def shrink_for_tests(config: ml_collections.ConfigDict) -> None:
    """Tiny frames, narrow widths, a few steps on embedded data: seconds on a CPU."""
    config.batch_size = 4
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    config.progress_bar = False
    config.data.source = "synthetic"
    config.data.image_size = 32
    config.data.synthetic.num_videos = 8
    config.data.synthetic.num_frames = 12
    config.data.synthetic.num_objects = 2
    config.model.encoder.embed_dim = 8
    config.model.encoder.stem_width = 8
    config.model.encoder.stage_widths = (8, 8, 16, 16)
    config.model.reconstruction.radius = 2
    config.model.reconstruction.tile = 4
    config.model.value_map.window = 2
    config.model.value_map.grid_reference = 0  # Windows of 2 on the 8x8 grid.
    config.model.sampler.num_clusters = 3
    config.model.sampler.kmeans_iters = 3
    config.model.sampler.radius_max = 3
    config.model.sampler.grid_reference = 0  # Radii 2..3 on the 8x8 grid.
    config.memory.bank_frames = 8
    config.memory.bank_pixels = 4
    config.memory.num_negatives = 16
    if "synthetic" in config.evals:
        config.evals.synthetic.num_videos = 2
        config.evals.synthetic.num_frames = 6
        config.evals.synthetic.num_objects = 2
        config.evals.synthetic.at_end = False  # Tests that evaluate turn it on.
        config.evals.synthetic.presets[config.evals.synthetic.preset].radius = 2  # 8x8 feature grid.


def synthetic_eval() -> ml_collections.ConfigDict:
    """`config.evals.synthetic`: J&F of label propagation on 16 held-out procedural videos like the
    training data's (config.data: image_size, flow_gap, synthetic.kind), for the trained encoder,
    its VEN-refined queries (models with a VEN) and the copy and lab floors, after the last step."""
    fields = propagation.training_eval("synthetic")
    fields.feature_batch = 8
    return fields
