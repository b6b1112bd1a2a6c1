"""Every config file loads, every variant has exactly the reference set of fields."""

import glob
import os

import pytest
from absl import flags
from ml_collections import config_flags

from configs import davis, propagation, ytvos
from configs.table4 import ROWS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
VARIANTS = {
    "ytvos.py": [None, "debug"],
    "demo.py": [None, "debug"],
    "davis.py": [None, "debug"],
    "jhmdb.py": [None],
    "ytvos_val.py": [None],
    "table4.py": [None, "demo", "debug"],
}
TRAINING = {"ytvos.py", "demo.py"}


def flat_keys(config, prefix=""):
    keys = set()
    for key, value in config.items():
        if hasattr(value, "items"):
            keys |= flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


REFERENCE_KEYS = flat_keys(ytvos.get_config())
EVALUATION_KEYS = flat_keys(davis.base_config())


def test_every_config_file_has_listed_variants():
    names = {os.path.basename(p) for p in CONFIG_FILES} - {"__init__.py"}
    assert names == set(VARIANTS)


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in VARIANTS.items() for v in vs])
def test_config_loads_with_the_reference_keys(name, variant):
    path = os.path.join(REPO, "configs", name) + (f":{variant}" if variant else "")
    flag_values = flags.FlagValues()  # Parsed exactly as the command line does.
    config_flags.DEFINE_config_file("config", flag_values=flag_values, lock_config=True)
    flag_values(["train", f"--config={path}"])
    config = flag_values.config
    if name == "table4.py":
        assert flat_keys(config) - REFERENCE_KEYS == {f"sweep.rows.{r}.{s}" for r in ROWS for s in ROWS[r]} | {
            "sweep.only"
        }
        assert REFERENCE_KEYS <= flat_keys(config)
    else:
        assert flat_keys(config) == (REFERENCE_KEYS if name in TRAINING else EVALUATION_KEYS)


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
    # Full MER by default, with the paper's hyper-parameters (MER_SPEC sections 3-5).
    assert all(config.model[s] for s in ("use_flow", "use_ven", "use_sampler", "use_weight_map", "use_pos_neg"))
    assert (config.model.sampler.num_clusters, config.model.sampler.grow_threshold) == (5, 0.45)
    assert (config.model.ven.ven_beta, config.model.ven.ven_heads, config.model.ven.ven_window) == (0.6, 4, 8)
    assert (config.memory.bank_frames, config.memory.num_negatives, config.memory.bank_pixels) == (3250, 4096, 256)
    assert (config.loss.lambda_pn, config.model.flow.flow_alpha_init, config.model.ven.dropkey_rate) == (0.1, 0.1, 0.1)


def test_propagation_presets_of_the_spec():
    presets = propagation.presets()
    mer, crw = presets.mer, presets.crw
    assert (mer.radius, mer.temperature, mer.topk, mer.normalize) == (14, 1.0, 0, False)
    assert (tuple(mer.long_term), mer.short_term, mer.short_term_search) == ((0, 5, 10), 3, 8)
    assert (mer.compactness_topk, mer.compactness_sigma, mer.compactness_min_prob, mer.foreground_scale) == (
        2,
        1.0,
        0.1,
        1.15,
    )
    assert (crw.radius, crw.temperature, crw.topk, crw.crw_context, crw.normalize) == (12, 0.05, 10, 20, True)
    assert davis.base_config().lab_temperature == 0.05
