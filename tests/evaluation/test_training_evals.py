"""Evaluation during training (`config.evals.<name>`): held-out procedural videos, DAVIS and JHMDB
on a stand-in model whose features are the raw-Lab floor's, so 'trained' and the lab floor must
score the same; the same section fields as `mer_jax.evaluate`; errors naming the training flags."""

import inspect
import json
import types

import ml_collections
import numpy as np
import pytest

from configs import demo, real
from configs import propagation as propagation_config
from mer_jax import export, feature_maps, train
from mer_jax.data import synthetic_video
from mer_jax.evaluation import benchmark_run, features, protocol, training_evals, vos
from mer_jax.evaluation.field_errors import FieldError
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


def section(name, **fields):
    """`propagation.training_eval(name)` with small presets and the given fields."""
    config = propagation_config.training_eval(name)
    config.presets = small_presets()
    config.update(fields)
    return config


SYNTHETIC = dict(num_videos=3, num_frames=5, num_objects=2, seed=11, preset="crw", feature_batch=2)


def synthetic_run(image_size=64, **fields):
    fields = section("synthetic", **{**SYNTHETIC, **fields})
    return training_evals.TrainingEvaluation("synthetic", fields, stand_in_model(image_size).config.data)


def test_synthetic_evaluation_writes_the_model_and_the_floors_and_matches_numpy(tmp_path, capsys):
    scalars = synthetic_run().run(stand_in_model(), str(tmp_path))
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert list(results) == ["preset", "kind", "videos", "trained", "floors"]
    assert list(results["floors"]) == ["copy", "lab"]
    for scores in (results["trained"], *results["floors"].values()):
        assert list(scores) == ["J&F-Mean", "J-Mean", "F-Mean", "objects", "per_object"]
        assert len(scores["per_object"]) == scores["objects"]
    # Each path's own file, as `python -m mer_jax.evaluate --config=configs/synthetic.py` writes it.
    for path in ("trained", "floors/copy", "floors/lab"):
        written = json.loads((tmp_path / "eval_synthetic" / path / "synthetic_results.json").read_text())
        assert written == (results["trained"] if path == "trained" else results["floors"][path.split("/")[1]])
    assert scalars["trained/J&F-Mean"] == results["trained"]["J&F-Mean"]
    assert scalars["floors/copy/J-Mean"] == results["floors"]["copy"]["J-Mean"]
    assert len(scalars) == 3 * 4
    out = capsys.readouterr().out
    assert "synthetic (crw preset) beside its floors" in out
    assert all(f"\n{row} " in out for row in ("trained", "copy floor", "lab floor"))
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


def test_synthetic_videos_follow_the_training_data_unless_set():
    data = stand_in_model(image_size=80).config.data
    data.flow_gap, data.synthetic.kind = 2, "camouflage"
    run = training_evals.TrainingEvaluation("synthetic", section("synthetic", **SYNTHETIC), data)
    assert (run.benchmark.benchmark.image_size, run.benchmark.benchmark.flow_gap) == (80, 2)
    assert run.benchmark.description() == {"kind": "camouflage", "videos": 3}
    fixed = training_evals.TrainingEvaluation("synthetic", section("synthetic", **SYNTHETIC | {"kind": "easy"}), data)
    assert fixed.benchmark.description()["kind"] == "easy"


def test_synthetic_evaluation_refuses_a_window_global_for_the_grid_before_training():
    with pytest.raises(FieldError, match=r"--config.evals.synthetic.preset has radius 4: a global search on the 8x8"):
        synthetic_run(image_size=32)


def test_an_unknown_preset_or_benchmark_is_named_as_the_training_flag():
    with pytest.raises(FieldError, match=r"--config.evals.synthetic.preset must be one of \['crw'"):
        synthetic_run(preset="stm")
    with pytest.raises(ValueError, match="config.evals.davs: unknown benchmark; use one of"):
        training_evals.TrainingEvaluation("davs", section("davis"), stand_in_model().config.data)


def test_davis_evaluation_scores_trained_and_lab_into_the_workdir(tmp_path):
    fake_data.davis_tree(str(tmp_path / "DAVIS"), num_sequences=1, num_frames=5)
    fields = section("davis", davis_root=str(tmp_path / "DAVIS"), preset="crw", feature_batch=2)
    model = stand_in_model()
    evaluation = training_evals.TrainingEvaluation("davis", fields, model.config.data)
    scalars = evaluation.run(model, str(tmp_path / "work"))
    for path, folder in (("trained", "trained"), ("floors/lab", "floors/lab"), ("floors/copy", "floors/copy")):
        report = json.loads((tmp_path / "work" / "eval_davis" / folder / "results.json").read_text())
        assert scalars[f"{path}/J&F-Mean"] == pytest.approx(report["J&F-Mean"], abs=1e-12)
        # Each object's J&F, the form a sweep pairs objects by, from the toolkit's per-object J and F.
        summary = json.loads((tmp_path / "work" / "eval_davis" / "summary.json").read_text())
        scores = summary["trained"] if path == "trained" else summary["floors"][path.split("/")[1]]
        expected = {name: (o["J-Mean"] + o["F-Mean"]) / 2 for name, o in report["per_object"].items()}
        assert scores["per_object"] == pytest.approx(expected, abs=1e-12) and scores["objects"] == len(expected)
    assert list(summary) == ["preset", "kind", "videos", "trained", "floors"] and summary["preset"] == "crw"
    assert (summary["kind"], summary["videos"]) == ("DAVIS-2017 val", 1)
    assert scalars["trained/J&F-Mean"] == scalars["floors/lab/J&F-Mean"]
    assert len(scalars) == 3 * 8  # The seven toolkit numbers and the number of objects.
    (tmp_path / "work" / "eval_davis" / "floors" / "lab" / "results.json").unlink()
    assert evaluation.run(model, str(tmp_path / "work")) == scalars  # The floors are computed once.
    assert not (tmp_path / "work" / "eval_davis" / "floors" / "lab" / "results.json").exists()
    # Floors given (a sweep's, scored once for all its runs) are taken as they are.
    given = {"copy": {**summary["floors"]["copy"], "J&F-Mean": 0.25}, "lab": summary["floors"]["lab"]}
    evaluation = training_evals.TrainingEvaluation("davis", fields, model.config.data, floors=given)
    assert evaluation.run(model, str(tmp_path / "given"))["floors/copy/J&F-Mean"] == 0.25
    assert not (tmp_path / "given" / "eval_davis" / "floors").exists()


def test_davis_evaluation_without_a_root_stops_training_before_it_starts(tmp_path):
    config = real.get_config("debug")  # davis_root unset.
    with pytest.raises(ValueError, match="set --config.evals.davis.davis_root=PATH/DAVIS"):
        train.train_and_evaluate(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()  # Before the workdir, the data or the model.


def test_training_sections_hold_the_fields_evaluate_takes():
    from mer_jax import evaluate

    for name, module in propagation_config.BENCHMARK_CONFIGS.items():
        training = set(propagation_config.training_eval(name)) - set(training_evals.TRAINING_FIELDS)
        config = __import__(module, fromlist=["get_config"]).get_config()
        assert set(evaluate.RUN_FIELDS) <= set(config), name
        assert training == set(config) - set(evaluate.RUN_FIELDS), name
        own = training - set(benchmark_run.PROPAGATION_FIELDS)
        assert own == set(inspect.signature(benchmark_run.BENCHMARKS[name]).parameters), name


@pytest.mark.slow
def test_a_debug_training_run_logs_jhmdb_scores_and_floors(tmp_path):
    from tests.test_train import read_scalars

    fake_data.jhmdb_tree(str(tmp_path / "JHMDB"), num_frames=4, num_test_videos=2)
    config = demo.get_config("debug")
    config.evals.jhmdb = section("jhmdb", jhmdb_root=str(tmp_path / "JHMDB"), preset="crw", feature_batch=2)
    train.train_and_evaluate(config, str(tmp_path / "work"))
    scalars = read_scalars(str(tmp_path / "work"))
    summary = json.loads((tmp_path / "work" / "eval_jhmdb" / "summary.json").read_text())
    last = config.num_train_steps
    for path in ("trained", "trained_ven", "floors/copy", "floors/lab"):
        scores = summary
        for key in path.split("/"):
            scores = scores[key]
        for key in ("PCK@0.1", "PCK@0.2"):  # TensorBoard writes "@" as "_".
            assert scalars[f"jhmdb/{path}/{key.replace('@', '_')}"][last] == pytest.approx(scores[key], rel=1e-6)
    # The test videos are static: holding the first frame's joints still is exact.
    assert summary["floors"]["copy"]["PCK@0.1"] == 1.0
    assert json.loads((tmp_path / "work" / "eval_jhmdb" / "floors" / "copy" / "jhmdb_results.json").read_text())


def test_a_completed_evaluation_is_recorded_with_its_step_and_section(tmp_path):
    evaluation = synthetic_run()
    assert not evaluation.completed(str(tmp_path), 4)
    evaluation.record(str(tmp_path), 4)
    assert evaluation.completed(str(tmp_path), 4) and not evaluation.completed(str(tmp_path), 2)
    assert not synthetic_run(num_videos=4).completed(str(tmp_path), 4)  # Another section: not this one.
    record = json.loads((tmp_path / training_evals.RECORD_FILE).read_text())
    assert record["synthetic"]["step"] == 4 and record["synthetic"]["section"]["num_videos"] == 3
