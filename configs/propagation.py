"""Label-propagation presets and the fields every benchmark config shares (docs/method.md,
'Label propagation' and 'Benchmarks'); the presets also serve evaluation during training."""

import ml_collections
from ml_collections import config_dict


def presets() -> ml_collections.ConfigDict:
    """The label-propagation protocols; every number is a field (`protocol.Preset`)."""
    presets = ml_collections.ConfigDict()
    presets.mer = ml_collections.ConfigDict(
        dict(
            context="mer",
            radius=14,
            first_frame_window=True,
            window="square",
            temperature=1.0,
            topk=config_dict.placeholder(int),  # None: every affinity in the windows.
            normalize=False,
            long_term=(0, 5, 10),
            short_term=3,
            short_term_search=8,
            short_term_blur=2.0,
            crw_context=20,
            compactness=True,
            compactness_topk=2,
            compactness_sigma=1.0,
            compactness_min_prob=0.1,
            foreground_scale=1.15,
            tile=8,
        )
    )
    # CRW's protocol: the whole first frame plus a radius-12 disk in each of the 20 previous frames,
    # top-10 over all of them together.
    presets.crw = ml_collections.ConfigDict(
        dict(
            context="crw", radius=12, first_frame_window=False, window="disk", temperature=0.05, topk=10,
            normalize=True, long_term=(0, 5, 10), short_term=3, short_term_search=8, short_term_blur=2.0,
            crw_context=20, compactness=False, compactness_topk=2, compactness_sigma=1.0, compactness_min_prob=0.1,
            foreground_scale=1.0, tile=8,
        )
    )  # fmt: skip
    # Today's windowed reading of CRW: as `crw`, but the first frame too is searched only inside
    # the radius-12 disk.
    presets.crw_windowed = ml_collections.ConfigDict(
        dict(
            context="crw", radius=12, first_frame_window=True, window="disk", temperature=0.05, topk=10,
            normalize=True, long_term=(0, 5, 10), short_term=3, short_term_search=8, short_term_blur=2.0,
            crw_context=20, compactness=False, compactness_topk=2, compactness_sigma=1.0, compactness_min_prob=0.1,
            foreground_scale=1.0, tile=8,
        )
    )  # fmt: skip
    # `mer_small` and `crw_small`: as `mer` and `crw` with radius 4, for small feature grids (the
    # procedural videos: 64x64 frames give a 16x16 grid, 128x128 a 32x32 one), where the radius
    # stays at most a quarter of the grid side.
    presets.mer_small = ml_collections.ConfigDict(
        dict(
            context="mer", radius=4, first_frame_window=True, window="square", temperature=1.0,
            topk=config_dict.placeholder(int), normalize=False, long_term=(0, 5, 10), short_term=3,
            short_term_search=8, short_term_blur=2.0, crw_context=20, compactness=True, compactness_topk=2,
            compactness_sigma=1.0, compactness_min_prob=0.1, foreground_scale=1.15, tile=8,
        )
    )  # fmt: skip
    presets.crw_small = ml_collections.ConfigDict(
        dict(
            context="crw", radius=4, first_frame_window=False, window="disk", temperature=0.05, topk=10,
            normalize=True, long_term=(0, 5, 10), short_term=3, short_term_search=8, short_term_blur=2.0,
            crw_context=20, compactness=False, compactness_topk=2, compactness_sigma=1.0, compactness_min_prob=0.1,
            foreground_scale=1.0, tile=8,
        )
    )  # fmt: skip
    return presets


def benchmark_config(benchmark: str) -> ml_collections.ConfigDict:
    """The fields of every benchmark config (`mer_jax.evaluate` uses them; the benchmark's own
    fields, added by its config file, go to its evaluator).

    Args:
      benchmark: 'davis', 'jhmdb', 'tapvid' or 'ytvos' (`mer_jax.evaluate.EVALUATORS`).
    """
    config = ml_collections.ConfigDict()
    config.benchmark = benchmark
    # A training workdir or an export directory (not needed for encoder=lab).
    config.checkpoint = config_dict.placeholder(str)
    config.encoder = "trained"  # 'trained' or 'lab' (raw Lab pixels at the encoder's stride).
    config.eval = ml_collections.ConfigDict()
    # True: refine each query frame's features with the model's VEN against its references, as
    # in training (needs a model trained with model.use_ven); False: encoder features only.
    config.eval.use_ven = False
    config.floors = True  # Also score the copy and lab floors into <output>/floors/.
    config.preset = "mer"
    config.presets = presets()
    # The lab baseline always uses L2-normalised features at this temperature (docs/method.md,
    # 'Label propagation'): an unnormalised dot product of Lab pixels is nearly uniform.
    config.lab_temperature = 0.05
    config.lab_mean = (50.0, 0.0, 0.0)  # Lab normalisation of the lab encoder.
    config.lab_std = (50.0, 127.0, 127.0)
    config.output = config_dict.placeholder(str)  # None: <checkpoint or .>/eval_<benchmark>_<encoder>_<preset>.
    config.save_overlays = False
    config.feature_batch = 4
    config.sequences = config_dict.placeholder(str)  # Comma-separated subset of sequences/videos (None: all).
    return config
