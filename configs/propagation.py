"""Label-propagation presets and the fields every benchmark config shares (docs/method.md,
'Label propagation' and 'Benchmarks'); the presets also serve evaluation during training."""

import ml_collections
from ml_collections import config_dict


def presets() -> ml_collections.ConfigDict:
    """The two label-propagation protocols; every number is a field (`protocol.Preset`)."""
    presets = ml_collections.ConfigDict()
    presets.mer = ml_collections.ConfigDict(
        dict(
            context="mer",
            radius=14,
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
    presets.crw = ml_collections.ConfigDict(
        dict(
            context="crw", radius=12, window="disk", temperature=0.05, topk=10, normalize=True,
            long_term=(0, 5, 10), short_term=3, short_term_search=8, short_term_blur=2.0, crw_context=20,
            compactness=False, compactness_topk=2, compactness_sigma=1.0, compactness_min_prob=0.1,
            foreground_scale=1.0, tile=8,
        )
    )  # fmt: skip
    return presets


def benchmark_config(benchmark: str) -> ml_collections.ConfigDict:
    """The fields of every benchmark config (`mer_jax.evaluate` uses them; the benchmark's own
    fields, added by its config file, go to its evaluator).

    Args:
      benchmark: 'davis', 'jhmdb' or 'ytvos' (`mer_jax.evaluate.EVALUATORS`).
    """
    config = ml_collections.ConfigDict()
    config.benchmark = benchmark
    # A training workdir or an export directory (not needed for encoder=lab).
    config.checkpoint = config_dict.placeholder(str)
    config.encoder = "trained"  # 'trained' or 'lab' (raw Lab pixels at the encoder's stride).
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
