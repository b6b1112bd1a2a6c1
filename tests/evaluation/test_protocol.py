"""The propagation protocol: preset validation, the lab override and the reference plans."""

import dataclasses

import numpy as np
import pytest

from configs import propagation as propagation_config
from mer_jax.evaluation import protocol


def test_crw_reference_plan_is_first_frame_plus_previous_frames():
    preset = protocol.Preset(context="crw", crw_context=3)
    indices, valid = protocol.reference_plan(np.zeros((7, 8, 8, 3), np.uint8), preset)
    assert indices.shape == (7, 4)
    assert list(indices[1][valid[1]]) == [0]
    assert list(indices[2][valid[2]]) == [0, 1]
    assert list(indices[6][valid[6]]) == [0, 3, 4, 5]


def test_mer_reference_plan_picks_long_term_and_most_similar_short_term_frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
    frames = np.stack([np.clip(base.astype(int) + 40 * (i % 4), 0, 255).astype(np.uint8) for i in range(20)])
    preset = protocol.Preset(context="mer", long_term=(0, 5, 10), short_term=3, short_term_search=8)
    indices, valid = protocol.reference_plan(frames, preset)
    assert indices.shape == (20, 6)
    refs = list(indices[16][valid[16]])
    # Frame 16 equals frames 12 and 8 (same i % 4); then the next most similar (+-40) are 15, 13, 11, 9.
    assert refs[:3] == [0, 5, 10]
    assert {8, 12} <= set(refs[3:]) and len(refs) == 6
    assert list(indices[3][valid[3]]) == [0, 1, 2]  # long-term 0, short-term among 2 and 1
    assert all(set(indices[t][valid[t]]) <= set(range(t)) for t in range(1, 20))


@pytest.mark.parametrize("context", protocol.CONTEXTS)
def test_reference_slot_0_is_always_the_first_frame(context):
    # The kernel's first_frame_window takes slot 0 as frame 0 of the propagated range.
    frames = np.random.default_rng(1).integers(0, 256, size=(30, 16, 16, 3)).astype(np.uint8)
    preset = protocol.Preset(context=context, crw_context=4, long_term=(0, 3, 7), short_term=2, short_term_search=5)
    indices, valid = protocol.reference_plan(frames, preset)
    assert np.all(indices[:, 0] == 0) and np.all(valid[1:, 0])


def test_lab_preset_is_always_normalised_at_low_temperature():
    presets = propagation_config.presets()
    lab = protocol.make_preset(presets.mer, "lab", 0.05)
    trained = protocol.make_preset(presets.mer, "trained", 0.05)
    assert (lab.normalize, lab.temperature, lab.radius) == (True, 0.05, 14)
    assert (trained.normalize, trained.temperature, trained.topk) == (False, 1.0, None)
    assert lab.long_term == (0, 5, 10) and isinstance(trained.long_term, tuple)
    assert protocol.make_preset(presets.crw, "trained", 0.5).topk == 10


def test_bad_preset_values_are_rejected():
    with pytest.raises(ValueError, match="context"):
        protocol.Preset(context="stm")
    with pytest.raises(ValueError, match="window"):
        protocol.Preset(window="circle")
    with pytest.raises(ValueError, match="topk must be None"):
        protocol.Preset(topk=0)
    with pytest.raises(ValueError, match="long_term must start with frame 0"):
        protocol.Preset(context="mer", long_term=(5, 10))
    with pytest.raises(ValueError, match="compactness needs first_frame_window"):
        protocol.Preset(compactness=True, first_frame_window=False)


def test_presets_list_every_field_and_differ_only_where_named():
    presets = propagation_config.presets()
    fields = {f.name for f in dataclasses.fields(protocol.Preset)}
    assert sorted(presets) == ["crw", "crw_os8", "crw_small", "crw_windowed", "mer", "mer_small"]
    built = {}
    for name, preset in presets.items():
        assert set(preset) == fields, name
        built[name] = protocol.make_preset(preset, "trained", 0.05)
        protocol.make_preset(preset, "lab", 0.05)
    crw, mer = built["crw"], built["mer"]
    assert (crw.first_frame_window, crw.topk, crw.radius, crw.window) == (False, 10, 12, "disk")
    assert (mer.first_frame_window, mer.radius, mer.compactness) == (True, 14, True)
    assert built["crw_windowed"] == dataclasses.replace(crw, first_frame_window=True)
    assert built["crw_os8"] == dataclasses.replace(crw, stride=8)
    assert {preset.stride for name, preset in built.items() if name != "crw_os8"} == {4}
    # 16x16 feature grids (64x64 procedural videos): radius at most a quarter of the side.
    assert built["mer_small"] == dataclasses.replace(mer, radius=4)
    assert built["crw_small"] == dataclasses.replace(crw, radius=4)


def test_compactness_topk_beyond_topk_is_refused():
    with pytest.raises(ValueError, match=r"compactness_topk \(3\) must be at most topk \(2\)"):
        protocol.Preset(context="mer", topk=2, compactness=True, compactness_topk=3)
