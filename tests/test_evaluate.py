"""Evaluators end to end on tiny benchmark trees: outputs in the official formats, scores
consistent with the standalone scorer, clear errors on bad input."""

import html
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from configs import davis as davis_config
from configs import demo, ytvos_val
from configs import jhmdb as jhmdb_config
from configs import synthetic as synthetic_config
from mer_jax import evaluate, train
from mer_jax.data import resize
from mer_jax.evaluation import features, masks_io, protocol, vos
from mer_jax.evaluation.benchmarks.davis import metrics as davis_metrics
from mer_jax.evaluation.benchmarks.davis import scoring as davis
from mer_jax.evaluation.benchmarks.ytvos import evaluator as ytvos
from tests import fake_data, subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small(config):
    """Small windows for 48x64 frames."""
    for preset in config.presets.values():
        preset.radius = 4
        preset.crw_context = 3
    return config


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis") / "DAVIS"
    fake_data.davis_tree(str(root))
    return root


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("train")
    train.train_and_evaluate(demo.get_config("debug"), str(workdir))
    return workdir


@pytest.mark.parametrize("preset", ["mer", "crw"])
def test_davis_lab_propagation_writes_official_results(davis_root, tmp_path, preset):
    config = small(davis_config.get_config())
    config.update(dict(encoder="lab", davis_root=str(davis_root), preset=preset, output=str(tmp_path / "out")))
    config.presets.crw.topk = 1
    config.presets.crw.first_frame_window = True  # Top-1 within the window: a static pixel matches itself.
    summary = evaluate.evaluate(config)
    scores = summary["results"]
    gt_palette = masks_io.read_palette(davis_root / "Annotations" / "480p" / "seq0" / "00000.png")
    for seq in ("seq0", "seq1"):
        names = sorted(os.listdir(davis_root / "Annotations" / "480p" / seq))
        assert sorted(os.listdir(tmp_path / "out" / seq)) == names
        result = tmp_path / "out" / seq / names[3]
        assert masks_io.read_mask(result).shape == (48, 64)
        np.testing.assert_array_equal(masks_io.read_palette(result), gt_palette)
    assert (tmp_path / "out" / "global_results-val.csv").read_text().startswith("J&F-Mean,J-Mean,J-Recall")
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    rescored = davis.score(str(davis_root), str(tmp_path / "out"))
    assert report["J&F-Mean"] == pytest.approx(rescored.global_scores["J&F-Mean"], abs=1e-12)
    assert scores["J&F-Mean"] == pytest.approx(report["J&F-Mean"], abs=1e-12)
    assert 0.0 <= scores["J&F-Mean"] <= 1.0
    if preset == "crw":
        # seq1 is static: with top-1 every pixel's best match is itself, so propagation must
        # return exactly the stride-4 round trip of the first mask.
        first = masks_io.read_mask(davis_root / "Annotations" / "480p" / "seq1" / "00000.png")
        ids = np.array([0, 1, 2], np.uint8)
        round_trip = ids[np.asarray(vos.labels_to_mask(vos.labels_at_stride(first, [1, 2], 12, 16), 48, 64, 1.0))]
        for k in (1, 2):
            expected_j = davis_metrics.jaccard((first == k)[None], (round_trip == k)[None])[0]
            assert report["per_object"][f"seq1_{k}"]["J-Mean"] == pytest.approx(expected_j, abs=1e-9)
    # The floors, scored by the same code: lab is the model itself here; copy holds the first mask,
    # which is exact on the static seq1.
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["floors"]["lab"] == saved["results"]
    per_object = saved["results"].pop("per_object")
    assert saved["results"] == pytest.approx({k: v for k, v in scores.items() if k != "per_object"}, nan_ok=True)
    # Each object's J&F, the form a sweep pairs objects by: the toolkit's per-object J and F.
    expected = {name: (o["J-Mean"] + o["F-Mean"]) / 2 for name, o in report["per_object"].items()}
    assert per_object == pytest.approx(expected, abs=1e-12) and saved["results"]["objects"] == len(expected)
    copy = json.loads((tmp_path / "out" / "floors" / "copy" / "results.json").read_text())
    assert saved["floors"]["copy"]["J&F-Mean"] == pytest.approx(copy["J&F-Mean"], abs=1e-12)
    assert copy["per_object"]["seq1_1"]["J-Mean"] == copy["per_object"]["seq1_2"]["J-Mean"] == 1.0
    assert copy["per_object"]["seq0_1"]["J-Mean"] < 1.0


@pytest.mark.slow
def test_trained_encoder_from_workdir_and_overlays(davis_root, trained_workdir, tmp_path):
    config = small(davis_config.get_config())
    config.update(
        dict(checkpoint=str(trained_workdir), davis_root=str(davis_root), sequences="seq1", preset="crw",
             save_overlays=True, output=str(tmp_path / "out"))
    )  # fmt: skip
    summary = evaluate.evaluate(config)
    assert np.isfinite(summary["results"]["J&F-Mean"])
    assert sorted(os.listdir(tmp_path / "out")) == [
        "floors", "global_results-val.csv", "overlays", "per-sequence_results-val.csv", "report.html",
        "results.json", "seq1", "summary.json",
    ]  # fmt: skip
    assert sorted(os.listdir(tmp_path / "out" / "floors")) == ["copy", "lab"]
    assert set(json.loads((tmp_path / "out" / "summary.json").read_text())["floors"]) == {"copy", "lab"}
    # The VEN path (the demo trains one): its own folder by default, the same scoring.
    config.update(dict(output=None, floors=False, save_overlays=False))
    config.eval.use_ven = True
    assert evaluate.output_dir(config) == os.path.join(str(trained_workdir), "eval_davis_trained_crw_ven")
    ven = evaluate.evaluate(config)
    assert np.isfinite(ven["results"]["J&F-Mean"]) and ven["floors"] == {}
    assert os.path.getsize(tmp_path / "out" / "overlays" / "seq1.mp4") > 0


def test_davis_bad_inputs_are_named(tmp_path):
    root = tmp_path / "DAVIS"
    fake_data.davis_tree(str(root), num_sequences=1, num_frames=4)
    config = small(davis_config.get_config())
    config.update(dict(encoder="lab", davis_root=str(root), output=str(tmp_path / "out")))
    first = root / "Annotations" / "480p" / "seq0" / "00000.png"
    os.rename(first, tmp_path / "first.png")
    with pytest.raises(FileNotFoundError, match="missing first-frame annotation .*00000.png"):
        evaluate.evaluate(config)
    masks_io.write_mask(first, np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="annotation .*00000.png is \\(10, 10\\)"):
        evaluate.evaluate(config)
    os.rename(tmp_path / "first.png", first)
    (root / "JPEGImages" / "480p" / "seq0" / "00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode image .*00002.jpg"):
        evaluate.evaluate(config)
    config.sequences = "nope"
    with pytest.raises(ValueError, match="not in ImageSets"):
        evaluate.evaluate(config)
    config.davis_root = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="Sequence list not found"):
        evaluate.evaluate(config)


def test_davis_refuses_frames_that_do_not_match_the_annotations(tmp_path):
    root = tmp_path / "DAVIS"
    fake_data.davis_tree(str(root), num_sequences=2, num_frames=4)
    config = small(davis_config.get_config())
    config.update(dict(encoder="lab", davis_root=str(root), output=str(tmp_path / "out")))
    # Without seq1's first JPEG, propagation used to start from the ground truth of 00001 and score it.
    (root / "JPEGImages" / "480p" / "seq1" / "00000.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"'seq1'.*00000.png; missing .*JPEGImages/480p/seq1/00000.jpg"):
        evaluate.evaluate(config)
    assert not (tmp_path / "out" / "results.json").exists()
    fake_data.write_jpeg(str(root / "JPEGImages" / "480p" / "seq1" / "00000.jpg"), np.zeros((48, 64, 3), np.uint8))
    (root / "Annotations" / "480p" / "seq0" / "00002.png").unlink()  # A frame without ground truth.
    with pytest.raises(FileNotFoundError, match=r"'seq0'.*00002.jpg; missing .*Annotations/480p/seq0/00002.png"):
        evaluate.evaluate(config)
    assert not (tmp_path / "out" / "results.json").exists()


def test_synthetic_benchmark_runs_from_the_command_config(tmp_path):
    config = synthetic_config.get_config()
    config.update(dict(encoder="lab", num_videos=2, num_frames=5, num_objects=2, output=str(tmp_path / "out")))
    summary = evaluate.evaluate(config)
    # The lab encoder is its own floor; the copy floor holds the first frame's masks still.
    assert summary["floors"]["lab"] is summary["results"]
    written = json.loads((tmp_path / "out" / "synthetic_results.json").read_text())
    assert written == json.loads(json.dumps(summary["results"]))
    copy = json.loads((tmp_path / "out" / "floors" / "copy" / "synthetic_results.json").read_text())
    assert copy["objects"] == written["objects"] > 0 and copy["J-Mean"] < 1.0
    page = (tmp_path / "out" / "report.html").read_text()  # The table without thumbnails: no mask is written.
    assert all(f"<th>{name}</th>" in page for name in written["per_object"]) and "<img " not in page
    config.image_size = None
    with pytest.raises(ValueError, match=r"set --config.image_size \(the held-out videos' image_size\)"):
        evaluate.evaluate(config)


def test_unset_data_roots_are_named(tmp_path):
    for config, field in ((davis_config.get_config(), "davis_root"), (jhmdb_config.get_config(), "jhmdb_root"),
                          (ytvos_val.get_config(), "ytvos_root")):  # fmt: skip
        config.encoder = "lab"
        with pytest.raises(ValueError, match=f"set --config.{field}=PATH"):
            evaluate.evaluate(config)


def test_trained_encoder_needs_a_checkpoint(davis_root, tmp_path):
    config = davis_config.get_config()
    config.update(dict(davis_root=str(davis_root)))
    with pytest.raises(ValueError, match="needs --config.checkpoint"):
        evaluate.evaluate(config)
    config.checkpoint = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither an export"):
        evaluate.evaluate(config)


def test_ytvos_objects_start_at_their_first_annotation_and_zip_is_official(tmp_path):
    root = tmp_path / "valid"
    clip, frames = fake_data.ytvos_tree(str(root), late_frame=3)
    config = small(ytvos_val.get_config())
    config.update(dict(encoder="lab", ytvos_root=str(root), preset="crw", output=str(tmp_path / "out")))
    summary = evaluate.evaluate(config)
    assert os.path.isfile(summary["floors"]["copy"]["zip"])  # Each floor is a submission of its own.
    with zipfile.ZipFile(summary["results"]["zip"]) as archive:
        names = sorted(archive.namelist())
    assert names == [f"Annotations/vid0/{f}.png" for f in frames]
    masks = [masks_io.read_mask(tmp_path / "out" / "Annotations" / "vid0" / f"{f}.png") for f in frames]
    assert all(not (m == 2).any() for m in masks[:3])
    np.testing.assert_array_equal(masks[3] == 2, clip.masks[3] == 2)  # The annotation itself.
    assert all(set(np.unique(m)) <= {0, 1, 2} for m in masks)
    assert masks[0].shape == (48, 64)
    assert not (tmp_path / "out" / "report.html").exists()  # No ground truth: nothing to report.


def test_ytvos_max_height_resizes_the_frames_not_the_results(tmp_path):
    root = tmp_path / "valid"
    clip, frames = fake_data.ytvos_tree(str(root), late_frame=3)
    assert resize.processing_size(48, 64, 32) == (32, 43)
    assert resize.processing_size(48, 64, 48) == resize.processing_size(48, 64, None) == (48, 64)
    seen = []
    lab = features.LabEncoder((50.0, 0.0, 0.0), (50.0, 127.0, 127.0))

    def encoder(batch, flow=None):
        seen.append(batch.shape)
        return lab(batch)

    evaluator = ytvos.Evaluator(ytvos_root=str(root), ytvos_max_height=32, sequences=None, save_overlays=False)
    evaluator.run(encoder, protocol.Preset(radius=4, crw_context=3), str(tmp_path / "out"))
    assert seen == [(8, 32, 43, 3)]
    masks = [masks_io.read_mask(tmp_path / "out" / "Annotations" / "vid0" / f"{f}.png") for f in frames]
    assert all(mask.shape == (48, 64) for mask in masks)
    np.testing.assert_array_equal(masks[0], np.where(clip.masks[0] == 1, 1, 0))
    with pytest.raises(ValueError, match="ytvos_max_height must be None"):
        ytvos.Evaluator(ytvos_root=str(root), ytvos_max_height=0, sequences=None, save_overlays=False)


def test_ytvos_start_frames_and_annotations_need_their_jpegs(tmp_path):
    root = tmp_path / "valid"
    _, frames = fake_data.ytvos_tree(str(root), late_frame=3)
    config = small(ytvos_val.get_config())
    config.update(dict(encoder="lab", ytvos_root=str(root), preset="crw", output=str(tmp_path / "out")))
    jpeg = root / "JPEGImages" / "vid0" / f"{frames[3]}.jpg"
    jpeg.rename(tmp_path / "late.jpg")  # Object 2's start frame (and annotation) without its image.
    with pytest.raises(FileNotFoundError, match=rf"vid0.*Annotations/vid0/{frames[3]}.png; missing .*{frames[3]}.jpg"):
        evaluate.evaluate(config)
    (root / "Annotations" / "vid0" / f"{frames[3]}.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"object 2 starts at frame {frames[3]}.*vid0/{frames[3]}.jpg is missing"
    ):
        evaluate.evaluate(config)
    (tmp_path / "late.jpg").rename(jpeg)
    with pytest.raises(FileNotFoundError, match=rf"object 2 .*annotation .*vid0/{frames[3]}.png is missing"):
        evaluate.evaluate(config)
    assert not (tmp_path / "out" / "submission.zip").exists()


def test_ytvos_missing_meta_is_a_clear_error(tmp_path):
    config = ytvos_val.get_config()
    config.update(dict(encoder="lab", ytvos_root=str(tmp_path)))
    with pytest.raises(ValueError, match="meta.json not found: --config.ytvos_root must be YouTube-VOS's valid/"):
        evaluate.evaluate(config)


def test_jhmdb_propagates_joints_and_reports_pck(tmp_path):
    root = tmp_path / "JHMDB"
    fake_data.jhmdb_tree(str(root))
    config = small(jhmdb_config.get_config())
    config.update(dict(encoder="lab", jhmdb_root=str(root), output=str(tmp_path / "out")))
    config.presets.crw.topk = 1  # Static video: every pixel's best match within the window is itself.
    config.presets.crw.first_frame_window = True
    summary = evaluate.evaluate(config)
    scores = summary["results"]
    assert summary["floors"]["copy"]["PCK@0.2"] == 1.0  # Static joints held still are exact.
    report = json.loads((tmp_path / "out" / "jhmdb_results.json").read_text())
    assert set(report) == {"PCK@0.1", "PCK@0.2", "per_joint", "per_video"}
    assert len(report["per_joint"]["PCK@0.1"]) == 15
    assert scores["PCK@0.2"] >= scores["PCK@0.1"]
    assert scores["PCK@0.2"] == 1.0  # Joints decode within ~1 px of where they were put.
    # One test video: its PCK is the benchmark's; its predicted joints are kept for the report.
    [(video, pck)] = report["per_video"].items()
    assert pck == {"PCK@0.1": report["PCK@0.1"], "PCK@0.2": report["PCK@0.2"]}
    joints = np.load(tmp_path / "out" / "jhmdb_predictions.npz")[video]
    assert joints.shape == (6, 15, 2)
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<img ") == 4 and html.escape(video) in page and "copy floor" in page


@pytest.mark.slow
def test_evaluate_command_line(davis_root, tmp_path):
    command = [
        sys.executable, "-m", "mer_jax.evaluate", "--config=configs/davis.py:debug",
        f"--config.davis_root={davis_root}", f"--config.output={tmp_path / 'out'}", "--config.sequences=seq0",
    ]  # fmt: skip
    env = subprocess_env.subprocess_env()
    result = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True, env=env)
    table = result.stdout[result.stdout.index("beside its floors") :].splitlines()
    assert table[1].split() == ["J&F-Mean", "J-Mean", "F-Mean"]
    assert [line.split()[0] for line in table[2:5]] == ["lab", "copy", "lab"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["per_object"].keys() >= {"seq0_1"}
