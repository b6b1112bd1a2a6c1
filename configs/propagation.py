"""Label-propagation presets and the fields every benchmark config shares (docs/method.md,
'Label propagation' and 'Benchmarks'); the presets also serve evaluation during training."""

import importlib

import ml_collections
from ml_collections import config_dict


def _mer() -> dict:
    """MER's protocol (docs/method.md, 'Label propagation'): the base every preset overrides."""
    return dict(
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
        stride=4,  # The encoder output stride the radii and sigmas are meant for (protocol.Preset).
    )


def _crw() -> dict:
    """CRW's protocol: the whole first frame plus a radius-12 disk in each of the 20 previous
    frames, top-10 over all of them together, on L2-normalised features at temperature 0.05."""
    return dict(
        _mer(), context="crw", radius=12, first_frame_window=False, window="disk", temperature=0.05, topk=10,
        normalize=True, compactness=False, foreground_scale=1.0,
    )  # fmt: skip


def presets() -> ml_collections.ConfigDict:
    """The label-propagation protocols; every number is a field (`protocol.Preset`). Each preset is
    `_mer()` or `_crw()` with the fields it changes."""
    return ml_collections.ConfigDict(
        {
            "mer": _mer(),
            "crw": _crw(),
            # Today's windowed reading of CRW: the first frame too is searched only inside the disk.
            "crw_windowed": dict(_crw(), first_frame_window=True),
            # Radius 4, for small feature grids (the procedural videos: 64x64 frames give a 16x16
            # grid, 128x128 a 32x32 one), where the radius stays at most a quarter of the grid side.
            "mer_small": dict(_mer(), radius=4),
            "crw_small": dict(_crw(), radius=4),
            # CRW's own test protocol on its stride-8 features (radius 12 cells = 96 pixels), for
            # converted stride-8 encoders (`mer_jax.convert`: crw, vfs_*, stt_*_d8).
            "crw_os8": dict(_crw(), stride=8),
        }
    )


def propagation_fields(preset: str) -> ml_collections.ConfigDict:
    """The fields of a benchmark section that choose the protocol (`benchmark_run.PROPAGATION_FIELDS`),
    the same for `mer_jax.evaluate` and for `config.evals.<name>` during training."""
    fields = ml_collections.ConfigDict()
    fields.preset = preset
    fields.presets = presets()
    # The lab baseline always uses L2-normalised features at this temperature (docs/method.md,
    # 'Label propagation'): an unnormalised dot product of Lab pixels is nearly uniform.
    fields.lab_temperature = 0.05
    fields.feature_batch = 4  # Frames the trained encoder embeds at a time.
    return fields


def video_selection() -> ml_collections.ConfigDict:
    """The section fields of every benchmark on files: which videos, and whether to draw overlays."""
    fields = ml_collections.ConfigDict()
    fields.sequences = config_dict.placeholder(str)  # Comma-separated subset of the videos (None: all).
    fields.save_overlays = False  # Also write <output>/overlays/<video>.mp4.
    return fields


def benchmark_config(
    benchmark: str, preset: str = "mer", fields: ml_collections.ConfigDict | None = None
) -> ml_collections.ConfigDict:
    """A `mer_jax.evaluate` config: the command's own fields (`evaluate.RUN_FIELDS`),
    `propagation_fields` and the benchmark's own section `fields`.

    Args:
      benchmark: 'davis', 'jhmdb', 'synthetic', 'tapvid' or 'ytvos' (`benchmark_run.BENCHMARKS`).
      preset: the default preset's name.
      fields: the benchmark's own fields (its config file's `fields()`), or None.
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
    config.lab_mean = (50.0, 0.0, 0.0)  # Lab normalisation of the lab encoder.
    config.lab_std = (50.0, 127.0, 127.0)
    config.output = config_dict.placeholder(str)  # None: <checkpoint or .>/eval_<benchmark>_<encoder>_<preset>.
    config.update(propagation_fields(preset))
    config.update(fields or {})
    return config


# Each benchmark's config file (its `PRESET` and `fields()`, the benchmark's own section fields).
BENCHMARK_CONFIGS = {
    "davis": "configs.davis",
    "jhmdb": "configs.jhmdb",
    "synthetic": "configs.synthetic",
    "tapvid": "configs.tapvid",
    "ytvos": "configs.ytvos_val",
}


def training_eval(benchmark: str) -> ml_collections.ConfigDict:
    """`config.evals.<benchmark>`: evaluation during training (`training_evals.py`), with the
    section fields `mer_jax.evaluate` takes (`propagation_fields` and the benchmark's own), plus:
      every_steps: evaluate at every multiple of this step (None: not periodically);
      at_end: also after the last step;
      score_ven: also score the VEN-refined queries (`trained_ven`, models with a VEN)."""
    module = importlib.import_module(BENCHMARK_CONFIGS[benchmark])
    fields = ml_collections.ConfigDict()
    fields.every_steps = config_dict.placeholder(int)
    fields.at_end = True
    fields.score_ven = True
    fields.update(propagation_fields(module.PRESET))
    fields.update(module.fields())
    return fields
