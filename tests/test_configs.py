"""Every config file loads, every variant has exactly the reference set of fields."""

import glob
import os

import pytest
from absl import flags
from ml_collections import config_flags

from configs import propagation, real, table4, ytvos
from configs.table4 import ROWS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
VARIANTS = {
    "ytvos.py": [None, "debug"],
    "demo.py": [None, "debug", "camouflage"],
    "davis.py": [None, "debug"],
    "jhmdb.py": [None],
    "tapvid.py": [None],
    "ytvos_val.py": [None],
    "synthetic.py": [None],
    "table4.py": [None, "demo", "camouflage", "real", "debug"],
    "real.py": [None, "cpu", "debug"],
}
TRAINING = {"ytvos.py", "demo.py", "real.py"}


def flat_keys(config, prefix=""):
    keys = set()
    for key, value in config.items():
        if hasattr(value, "items"):
            keys |= flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


REFERENCE_KEYS = flat_keys(ytvos.get_config())
# Configs on the embedded videos also evaluate on held-out procedural videos.
SYNTHETIC_EVAL_KEYS = {f"evals.synthetic.{key}" for key in flat_keys(ytvos.synthetic_eval())}
# Configs on real video evaluate on DAVIS.
DAVIS_EVAL_KEYS = {f"evals.davis.{key}" for key in flat_keys(real.davis_eval())}


def training_keys(name, variant):
    if name == "real.py" or (name, variant) == ("table4.py", "real"):
        return REFERENCE_KEYS | DAVIS_EVAL_KEYS
    on_embedded_videos = name == "demo.py" or (name == "table4.py" and variant in ("demo", "camouflage", "debug"))
    return REFERENCE_KEYS | (SYNTHETIC_EVAL_KEYS if on_embedded_videos else set())


# Every benchmark config: the shared fields plus exactly its own.
BENCHMARK_KEYS = flat_keys(propagation.benchmark_config("davis"))
SHOWN = {"sequences", "save_overlays"}  # Fields of every benchmark on real videos.
EVALUATION_KEYS = {
    "davis.py": BENCHMARK_KEYS | SHOWN | {"davis_root", "year", "subset"},
    "jhmdb.py": BENCHMARK_KEYS | SHOWN | {"jhmdb_root", "jhmdb_split", "jhmdb_sigma", "jhmdb_topk"},
    "tapvid.py": BENCHMARK_KEYS
    | SHOWN
    | {"tapvid_path", "tapvid_size", "tapvid_sigma", "tapvid_topk", "tapvid_occlusion_threshold"},
    "ytvos_val.py": BENCHMARK_KEYS | SHOWN | {"ytvos_root", "ytvos_max_height"},
    "synthetic.py": BENCHMARK_KEYS
    | {"num_videos", "num_frames", "num_objects", "seed", "image_size", "flow_gap", "kind"},
}


def test_every_config_file_has_listed_variants():
    # configs/propagation.py holds shared fields (no get_config).
    names = {os.path.basename(p) for p in CONFIG_FILES} - {"__init__.py", "propagation.py"}
    assert names == set(VARIANTS)


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in VARIANTS.items() for v in vs])
def test_config_loads_with_the_reference_keys(name, variant):
    path = os.path.join(REPO, "configs", name) + (f":{variant}" if variant else "")
    flag_values = flags.FlagValues()  # Parsed exactly as the command line does.
    config_flags.DEFINE_config_file("config", flag_values=flag_values, lock_config=True)
    flag_values(["train", f"--config={path}"])
    config = flag_values.config
    if name == "table4.py":
        sweep_keys = {f"sweep.rows.{r}.{s}" for r in ROWS for s in ROWS[r]}
        sweep_keys |= {"sweep.only", "sweep.seeds", "sweep.baseline", "sweep.benchmark"}
        assert flat_keys(config) == training_keys(name, variant) | sweep_keys
    elif name in TRAINING:
        assert flat_keys(config) == training_keys(name, variant)
    else:
        assert flat_keys(config) == EVALUATION_KEYS[name]


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown variant"):
        ytvos.get_config("tiny")


def test_paper_hyper_parameters():
    config = ytvos.get_config()
    assert (config.batch_size, config.num_epochs, config.data.image_size) == (32, 20, 256)
    assert (config.optim.lr, config.optim.b1, config.optim.b2, config.optim.weight_decay) == (1e-3, 0.9, 0.999, 1e-5)
    assert config.optim.final_lr_fraction == 0.2
    assert tuple(config.data.frame_gaps) == (2, 3, 5) and tuple(config.data.gap_probs) == (0.4, 0.4, 0.2)
    assert tuple(config.model.encoder.stage_widths) == (64, 128, 256, 256) and config.model.encoder.embed_dim == 64
    assert config.model.reconstruction.radius == 6 and config.model.reconstruction.temperature == 1.0
    assert config.loss.loss_scale == 30.0 and config.loss.loss_channels == "dropped"
    # Full MER by default, with the paper's hyper-parameters (docs/method.md).
    assert all(config.model[s] for s in ("use_flow", "use_ven", "use_sampler", "use_weight_map", "use_pos_neg"))
    assert (config.model.sampler.num_clusters, config.model.sampler.grow_threshold) == (5, 0.45)
    assert (config.model.ven.num_heads, config.model.value_map.window) == (4, 8)
    assert (config.memory.bank_frames, config.memory.num_negatives, config.memory.bank_pixels) == (3250, 4096, 256)
    assert (config.loss.lambda_pn, config.model.ven.dropkey_rate) == (0.1, 0.1)
    assert (config.model.sampler.radius_min, config.model.sampler.radius_max) == (2, 12)
    # Ours where issue 12's audit found the paper's reading failing (docs/method.md).
    assert (config.model.flow.encoding, config.model.flow.alpha_init, config.model.flow.scale) == (
        "channels",
        1.0,
        0.02,
    )
    assert config.model.ven.zero_init_out and config.loss.encoder_recon_weight == 1.0
    assert config.model.sampler.center_features and config.model.sampler.grid_reference == 64
    # Issue 24's (bench/RESULTS.md): the value map's windows scale with the grid and static windows score 0.
    assert (config.model.value_map.beta, config.model.value_map.grid_reference) == (1.0, 64)


def test_real_video_variants_keep_the_contract():
    default, cpu = real.get_config(), real.get_config("cpu")
    for config in (default, cpu):
        assert (config.data.source, config.data.name) == ("tfds", "real_clips")
        davis = config.evals.davis
        assert davis.davis_root is None and davis.at_end and davis.preset == "mer"
        # Full MER, every module field as configs/ytvos.py unless set for size.
        assert all(config.model[s] for s in ("use_flow", "use_ven", "use_sampler", "use_weight_map", "use_pos_neg"))
    assert (default.data.image_size, default.batch_size, default.compute_dtype) == (256, 32, "bfloat16")
    assert default.num_train_steps >= 3000 and default.evals.davis.every_steps == 1000
    assert default.model.to_dict() == ytvos.get_config().model.to_dict()
    assert (default.evals.davis.year, default.evals.davis.subset) == ("2017", "val")
    assert cpu.data.image_size <= 96 and cpu.batch_size <= 8 and cpu.compute_dtype == "float32"
    assert (cpu.evals.davis.year, cpu.evals.davis.subset) == ("2016", "sample")  # The local DAVIS-2016 sample.
    with pytest.raises(ValueError, match="unknown variant"):
        real.get_config("gpu")


def test_propagation_presets_of_the_spec():
    presets = propagation.presets()
    mer, crw = presets.mer, presets.crw
    assert (mer.radius, mer.temperature, mer.topk, mer.normalize) == (14, 1.0, None, False)
    assert (tuple(mer.long_term), mer.short_term, mer.short_term_search) == ((0, 5, 10), 3, 8)
    assert (mer.compactness_topk, mer.compactness_sigma, mer.compactness_min_prob, mer.foreground_scale) == (
        2,
        1.0,
        0.1,
        1.15,
    )
    assert (crw.radius, crw.temperature, crw.topk, crw.crw_context, crw.normalize) == (12, 0.05, 10, 20, True)
    assert propagation.benchmark_config("davis").lab_temperature == 0.05


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("davis.py", dict(davis_root="PATH/DAVIS", checkpoint="DIR", output="OUT", sequences="a,b", encoder="lab")),
        ("jhmdb.py", dict(jhmdb_root="PATH/JHMDB", preset="mer")),
        ("ytvos_val.py", dict(ytvos_root="PATH/valid", ytvos_max_height=240)),
        ("tapvid.py", dict(tapvid_path="PATH/tapvid_davis.pkl", tapvid_occlusion_threshold=0.3)),
    ],
)
def test_unset_evaluation_fields_are_set_from_the_command_line(name, overrides):
    arguments = [f"--config.{key}={value}" for key, value in overrides.items()] + ["--config.presets.mer.topk=5"]
    argv = ["evaluate", f"--config={os.path.join(REPO, 'configs', name)}", *arguments]
    flag_values = flags.FlagValues()  # Overrides are registered from argv, as `app.run` does with sys.argv.
    config_flags.DEFINE_config_file("config", flag_values=flag_values, lock_config=True, sys_argv=argv)
    flag_values(argv)
    config = flag_values.config
    assert {key: config[key] for key in overrides} == overrides
    assert config.presets.mer.topk == 5
    unset = {"checkpoint", "output", "sequences", "davis_root", "jhmdb_root", "ytvos_root", "tapvid_path"}
    unset -= set(overrides)
    assert all(config[key] is None for key in unset & set(config))


def test_real_davis_fields_are_set_from_the_command_line():
    argv = ["train", f"--config={os.path.join(REPO, 'configs', 'real.py')}:cpu",
            "--config.evals.davis.davis_root=PATH/DAVIS", "--config.evals.davis.sequences=a,b",
            "--config.data.data_dir=TFDS_DIR"]  # fmt: skip
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values, lock_config=True, sys_argv=argv)
    flag_values(argv)
    davis = flag_values.config.evals.davis
    assert (davis.davis_root, davis.sequences, flag_values.config.data.data_dir) == ("PATH/DAVIS", "a,b", "TFDS_DIR")


def test_the_real_video_table4_scores_the_dev_sequences_at_480p_with_floors_once():
    config = table4.get_config("real")
    assert config.sweep.benchmark == "davis" and config.sweep.baseline == "baseline"
    davis = config.evals.davis
    assert (davis.year, davis.subset, davis.sequences, davis.preset) == ("2016", "dev", None, "mer")
    assert davis.at_end and not davis.score_ven and davis.every_steps is None
    cpu = real.get_config("cpu")  # Trained as the README's configs/real.py:cpu.
    assert config.model.to_dict() == cpu.model.to_dict() and config.data.to_dict() == cpu.data.to_dict()
    assert config.num_train_steps == cpu.num_train_steps and config.batch_size == cpu.batch_size
