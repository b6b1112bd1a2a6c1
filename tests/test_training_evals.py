"""Evaluators during training: held-out procedural videos and DAVIS, on a stand-in model whose
features are the raw-Lab floor's, so 'trained' and the lab floor must score the same."""

import json
import types

import ml_collections
import numpy as np
import pytest

from configs import propagation as propagation_config
from configs import real
from mer_jax import export, feature_maps, train
from mer_jax.data import synthetic_video
from mer_jax.evaluation import features, protocol, training_evals, vos
from mer_jax.models import encoder as encoder_lib
from tests import fake_data

LAB_MEAN, LAB_STD = (50.0, 0.0, 0.0), (50.0, 127.0, 127.0)


class PooledLab:
    """Stands in for the MER model in `export.embed`: features = the normalised Lab input averaged
    over stride x stride blocks, exactly the lab baseline's features."""

    use_flow = False
    use_ven = False

    def apply(self, variables, lab, flow, *, train, refine):
        return types.SimpleNamespace(features=feature_maps.average_pool(lab, encoder_lib.OUTPUT_STRIDE))


def stand_in_model(image_size=64):
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(dict(image_size=image_size, flow_gap=1, lab_mean=LAB_MEAN, lab_std=LAB_STD))
    config.data.synthetic = ml_collections.ConfigDict(dict(kind="easy"))
    return export.ExportedModel(PooledLab(), {}, config)


def small_presets():
    presets = propagation_config.presets()
    for preset in presets.values():
        preset.radius, preset.crw_context = 4, 3
    return presets


SYNTHETIC = dict(
    num_videos=3, num_frames=5, num_objects=2, seed=11, preset="crw", lab_temperature=0.05, feature_batch=2
)


def test_synthetic_evaluator_writes_the_model_and_the_floors_and_matches_numpy(tmp_path, capsys):
    evaluator = training_evals.SyntheticEvaluator(presets=small_presets(), **SYNTHETIC)
    scalars = evaluator.run(stand_in_model(), str(tmp_path))
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert list(results) == ["preset", "kind", "videos", "trained", "floors"]
    assert list(results["floors"]) == ["copy", "lab"]
    for scores in (results["trained"], *results["floors"].values()):
        assert list(scores) == ["J&F-Mean", "J-Mean", "F-Mean", "objects", "per_object"]
        assert len(scores["per_object"]) == scores["objects"]
    assert scalars["trained/J&F-Mean"] == results["trained"]["J&F-Mean"]
    assert scalars["floors/copy/J-Mean"] == results["floors"]["copy"]["J-Mean"]
    assert len(scalars) == 3 * 4
    out = capsys.readouterr().out
    assert "Held-out J&F-Mean (3 easy procedural videos" in out and "preset crw): trained" in out and "copy" in out
    # The crw preset is normalised at lab_temperature: the stand-in's scores are the lab floor's.
    assert results["trained"] == results["floors"]["lab"]
    # J-Mean from the VOS loop directly and plain-NumPy Jaccard over frames 1..T-2 of each object
    # visible in frame 0 (empty union: 1); the copy floor's prediction is frame 0's mask.
    videos = synthetic_video.generate_videos(11, 3, num_frames=5, height=64, width=64, num_objects=2, flow_gap=1)
    encoder = features.LabEncoder(LAB_MEAN, LAB_STD)
    preset = protocol.make_preset(small_presets().crw, "lab", 0.05)
    j_values = {"lab": [], "copy": []}
    for index, video in enumerate(videos):
        objects = [int(i) for i in np.unique(video.masks[0]) if i != 0]
        target = vos.Video(str(index), video.frames, {0: video.masks[0]}, objects, [str(t) for t in range(5)])
        ((_, predicted),) = list(vos.segment_videos([target], encoder, preset))
        for floor, masks in (("lab", predicted), ("copy", [video.masks[0]] * 5)):
            for k in objects:
                per_frame = []
                for t in range(1, 4):
                    truth, guess = video.masks[t] == k, masks[t] == k
                    union = (truth | guess).sum()
                    per_frame.append(1.0 if union == 0 else (truth & guess).sum() / union)
                j_values[floor].append(np.mean(per_frame))
    for floor in ("lab", "copy"):
        assert results["floors"][floor]["objects"] == len(j_values[floor])
        assert results["floors"][floor]["J-Mean"] == pytest.approx(np.mean(j_values[floor]), abs=1e-12)
    assert results["floors"]["copy"]["J-Mean"] < 1.0  # The objects move.


def test_synthetic_evaluator_refuses_a_window_global_for_the_grid(tmp_path):
    evaluator = training_evals.SyntheticEvaluator(presets=small_presets(), **SYNTHETIC)
    with pytest.raises(ValueError, match="a global search on the 8x8 feature grid"):
        evaluator.run(stand_in_model(image_size=32), str(tmp_path))


def test_synthetic_evaluator_rejects_an_unknown_preset():
    with pytest.raises(ValueError, match="preset must be one of"):
        training_evals.SyntheticEvaluator(presets=small_presets(), **dict(SYNTHETIC, preset="stm"))


def test_davis_evaluator_scores_trained_and_lab_into_the_workdir(tmp_path):
    fake_data.davis_tree(str(tmp_path / "DAVIS"), num_sequences=1, num_frames=5)
    evaluator = training_evals.EVALUATORS["davis"](
        davis_root=str(tmp_path / "DAVIS"), year="2017", subset="val", sequences=None, preset="crw",
        presets=small_presets(), lab_temperature=0.05, feature_batch=2, score_ven=True,
    )  # fmt: skip
    model = stand_in_model()
    scalars = evaluator.run(model, str(tmp_path / "work"))
    for path, folder in (("trained", "trained"), ("floors/lab", "floors/lab"), ("floors/copy", "floors/copy")):
        report = json.loads((tmp_path / "work" / "eval_davis" / folder / "results.json").read_text())
        assert scalars[f"{path}/J&F-Mean"] == pytest.approx(report["J&F-Mean"], abs=1e-12)
    assert scalars["trained/J&F-Mean"] == scalars["floors/lab/J&F-Mean"]
    assert len(scalars) == 3 * 7
    (tmp_path / "work" / "eval_davis" / "floors" / "lab" / "results.json").unlink()
    assert evaluator.run(model, str(tmp_path / "work")) == scalars  # The floors are computed once.
    assert not (tmp_path / "work" / "eval_davis" / "floors" / "lab" / "results.json").exists()


def test_davis_evaluator_without_a_root_stops_training_before_it_starts(tmp_path):
    config = real.get_config("debug")  # davis_root unset.
    with pytest.raises(ValueError, match="pass --config.evals.davis.davis_root=PATH/DAVIS"):
        train.train_and_evaluate(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()  # Before the workdir, the data or the model.
