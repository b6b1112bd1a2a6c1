"""Tests for the DAVIS benchmark scoring, reports and CLI (davis.py).

The scoring of whole data sets is checked against an independent per-object re-implementation of
the official definitions written here with plain loops and scipy.
"""

import json
import math
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mer_jax.evaluation import masks_io
from mer_jax.evaluation.benchmarks.davis import data as davis_data
from mer_jax.evaluation.benchmarks.davis import scoring as davis

REPO_ROOT = pathlib.Path(__file__).resolve().parents[4]
SAMPLE_ROOT = REPO_ROOT.parent / "shared" / "data" / "davis2016_sample" / "DAVIS"


# ----------------------------------------------------------------------------- independent reference


def _ref_boundary(seg):
    h, w = seg.shape
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                neighbours = [(y, x + 1)]
            elif x == w - 1:
                neighbours = [(y + 1, x)]
            else:
                neighbours = [(y, x + 1), (y + 1, x), (y + 1, x + 1)]
            out[y, x] = any(seg[ny, nx] != seg[y, x] for ny, nx in neighbours)
    return out


def _ref_f(gt, pred):
    radius = math.ceil(0.008 * math.hypot(*gt.shape))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    footprint = yy**2 + xx**2 <= radius**2
    gt_b, pred_b = _ref_boundary(gt), _ref_boundary(pred)
    n_gt, n_pred = gt_b.sum(), pred_b.sum()
    if n_gt == 0 or n_pred == 0:
        return 1.0 if n_gt == n_pred else 0.0
    precision = (pred_b & ndimage.binary_dilation(gt_b, footprint)).sum() / n_pred
    recall = (gt_b & ndimage.binary_dilation(pred_b, footprint)).sum() / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _ref_stats(values):
    edges = [math.floor(v + 1e-10 + 0.5) - 1 for v in np.linspace(1, len(values), 5)]
    first, last = values[edges[0] : edges[1] + 1], values[edges[3] : edges[4] + 1]
    return float(np.mean(values)), float(np.mean(values > 0.5)), float(np.mean(first) - np.mean(last))


def _reference_scores(gt_seqs, pred_seqs):
    """Official scores from plain loops. gt_seqs / pred_seqs: name -> [T, H, W] ids (void as 0)."""
    per_object = {}
    for name, gt in gt_seqs.items():
        pred = pred_seqs[name]
        for k in range(1, int(gt[0].max()) + 1):
            j, f = [], []
            for t in range(1, len(gt) - 1):
                g, p = gt[t] == k, pred[t] == k
                union = (g | p).sum()
                j.append(1.0 if union == 0 else (g & p).sum() / union)
                f.append(_ref_f(g, p))
            j_stats, f_stats = _ref_stats(np.array(j)), _ref_stats(np.array(f))
            per_object[f"{name}_{k}"] = dict(zip(davis.OBJECT_KEYS, j_stats + f_stats))
    global_scores = {key: np.mean([obj[key] for obj in per_object.values()]) for key in davis.OBJECT_KEYS}
    global_scores["J&F-Mean"] = (global_scores["J-Mean"] + global_scores["F-Mean"]) / 2
    return global_scores, per_object


# ----------------------------------------------------------------------------- fake DAVIS trees


def write_tree(root, year, subset, gt_seqs):
    (root / "ImageSets" / year).mkdir(parents=True)
    (root / "ImageSets" / year / f"{subset}.txt").write_text("\n".join(gt_seqs) + "\n\n")
    for name, ids in gt_seqs.items():
        for t, frame in enumerate(ids):
            path = root / "Annotations" / "480p" / name / f"{t:05d}.png"
            if year == "2016":
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(frame).save(path)
            else:
                masks_io.write_mask(path, frame)


def _write_results(results, pred_seqs, skip_ends=False):
    for name, ids in pred_seqs.items():
        for t, frame in enumerate(ids):
            if not (skip_ends and t in (0, len(ids) - 1)):
                masks_io.write_mask(results / name / f"{t:05d}.png", frame)


def davis2017_case():
    """GT with a void band (255) and results with known errors; returns (gt, gt without void, pred)."""
    alpha = np.zeros((6, 24, 32), np.uint8)
    for t in range(6):
        alpha[t, 4:12, 3 + t : 13 + t] = 1
        alpha[t, 14:21, 18:28] = 2
    alpha[:, 12, :] = 255
    alpha[:, 0:2, 20:] = 255
    beta = np.zeros((5, 20, 28), np.uint8)
    yy, xx = np.mgrid[:20, :28]
    for t in range(5):
        beta[t][(yy - 10) ** 2 + (xx - 8 - 2 * t) ** 2 <= 25] = 1
    gt = {"alpha": alpha, "beta": beta}
    clean = {name: np.where(ids == 255, 0, ids).astype(np.uint8) for name, ids in gt.items()}
    pred_alpha = clean["alpha"].copy()
    pred_alpha[1] = np.roll(pred_alpha[1], 1, axis=1)
    pred_alpha[2][pred_alpha[2] == 2] = 0  # object 2 missed
    pred_alpha[2, 16:19, 20:25] = 2
    pred_alpha[3, 0:2, 20:] = 1  # paints the void band: counts as background, as officially
    pred_alpha[4] = np.roll(pred_alpha[4], 2, axis=0)
    pred_alpha[5] = 9  # last frame: never read
    pred_beta = clean["beta"].copy()
    pred_beta[2] = 0
    pred_beta[3] = np.roll(pred_beta[3], 3, axis=1)
    return gt, clean, {"alpha": pred_alpha, "beta": pred_beta}


@pytest.fixture(scope="module")
def davis2017_scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("davis2017")
    gt, clean, pred = davis2017_case()
    write_tree(tmp / "DAVIS", "2017", "val", gt)
    _write_results(tmp / "results", pred, skip_ends=False)
    (tmp / "results" / "beta" / "00000.png").unlink()  # the first frame is never read either
    scores = davis.score(tmp / "DAVIS", tmp / "results")
    return tmp, scores, _reference_scores(clean, pred)


def test_score_matches_reference(davis2017_scored):
    _, scores, (expected_global, expected_objects) = davis2017_scored
    assert list(scores.global_scores) == list(davis.GLOBAL_KEYS)
    assert list(scores.per_object) == ["alpha_1", "alpha_2", "beta_1"]
    for key in davis.GLOBAL_KEYS:
        assert scores.global_scores[key] == pytest.approx(expected_global[key], abs=1e-12), key
    for name, values in expected_objects.items():
        for key in davis.OBJECT_KEYS:
            assert scores.per_object[name][key] == pytest.approx(values[key], abs=1e-12), (name, key)
    assert 0 < scores.global_scores["J-Mean"] < 1 and 0 < scores.global_scores["F-Mean"] < 1


def test_csvs_and_json(davis2017_scored, tmp_path):
    _, scores, _ = davis2017_scored
    global_path, per_sequence_path = davis.write_csvs(scores, tmp_path, "val")
    assert global_path.name == "global_results-val.csv"
    assert per_sequence_path.name == "per-sequence_results-val.csv"
    header, row = global_path.read_text().splitlines()
    assert header == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
    assert row == ",".join(f"{scores.global_scores[key]:.3f}" for key in davis.GLOBAL_KEYS)
    lines = per_sequence_path.read_text().splitlines()
    assert lines[0] == "Sequence,J-Mean,F-Mean"
    alpha_1 = scores.per_object["alpha_1"]
    assert lines[1] == f"alpha_1,{alpha_1['J-Mean']:.3f},{alpha_1['F-Mean']:.3f}"
    assert [line.split(",")[0] for line in lines[1:]] == ["alpha_1", "alpha_2", "beta_1"]
    report = scores.as_dict()
    assert list(report) == [*davis.GLOBAL_KEYS, "per_object"]
    assert list(report["per_object"]["beta_1"]) == list(davis.OBJECT_KEYS)
    table = davis.format_table(scores, "val")
    assert "J&F-Mean" in table and "alpha_2" in table


@pytest.mark.slow
def test_cli(davis2017_scored, tmp_path):
    tmp, scores, _ = davis2017_scored
    json_path = tmp_path / "out" / "scores.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mer_jax.evaluation.davis",
            f"--davis_root={tmp / 'DAVIS'}",
            f"--results={tmp / 'results'}",
            "--year=2017",
            "--set=val",
            f"--json={json_path}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Global results for val" in completed.stdout and "beta_1" in completed.stdout
    assert json.loads(json_path.read_text()) == scores.as_dict()
    assert (tmp / "results" / "global_results-val.csv").is_file()
    assert (tmp / "results" / "per-sequence_results-val.csv").is_file()


# ----------------------------------------------------------------------------- error cases


@pytest.fixture()
def small_tree(tmp_path):
    gt = np.zeros((4, 10, 12), np.uint8)
    gt[:, 2:6, 2:7] = 1
    write_tree(tmp_path / "DAVIS", "2017", "val", {"seq": gt})
    _write_results(tmp_path / "results", {"seq": gt})
    return tmp_path / "DAVIS", tmp_path / "results" / "seq"


def test_missing_result_frame(small_tree):
    root, seq_dir = small_tree
    (seq_dir / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match="00002.png"):
        davis.score(root, seq_dir.parent)


def test_missing_result_sequence(small_tree):
    root, seq_dir = small_tree
    seq_dir.rename(seq_dir.parent / "other")
    with pytest.raises(FileNotFoundError, match="No results for sequence 'seq'"):
        davis.score(root, seq_dir.parent)


def test_result_with_more_objects(small_tree):
    root, seq_dir = small_tree
    mask = masks_io.read_mask(seq_dir / "00001.png")
    mask[0, 0] = 2
    masks_io.write_mask(seq_dir / "00001.png", mask)
    with pytest.raises(ValueError, match=r"seq.*2.*1 objects"):
        davis.score(root, seq_dir.parent)


def test_result_size_mismatch(small_tree):
    root, seq_dir = small_tree
    masks_io.write_mask(seq_dir / "00002.png", np.zeros((10, 13), np.uint8))
    with pytest.raises(ValueError, match=r"00002.png.*13x10"):
        davis.score(root, seq_dir.parent)


def test_unreadable_result(small_tree):
    root, seq_dir = small_tree
    (seq_dir / "00001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="00001.png"):
        davis.score(root, seq_dir.parent)


def test_rgb_result_rejected(small_tree):
    root, seq_dir = small_tree
    Image.new("RGB", (12, 10)).save(seq_dir / "00001.png")
    with pytest.raises(ValueError, match=r"00001.png.*'RGB'"):
        davis.score(root, seq_dir.parent)


def test_missing_sequence_list(small_tree):
    root, seq_dir = small_tree
    with pytest.raises(FileNotFoundError, match="train.txt"):
        davis.score(root, seq_dir.parent, subset="train")


# ----------------------------------------------------------------------------- DAVIS-2016


def test_davis2016_grey_masks(tmp_path):
    gt = np.zeros((5, 16, 20), np.uint8)
    for t in range(5):
        gt[t, 3:10, 2 + t : 9 + t] = 255
    pred = gt.copy()
    pred[2] = np.roll(pred[2], 2, axis=1)
    pred[3] = (pred[3] > 0).astype(np.uint8)  # any non-zero value is the object
    write_tree(tmp_path / "DAVIS", "2016", "val", {"cow": gt})
    for t, frame in enumerate(pred):
        (tmp_path / "results" / "cow").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(tmp_path / "results" / "cow" / f"{t:05d}.png")
    ids, void, _ = davis_data.read_ground_truth(tmp_path / "DAVIS", "cow", "2016")
    assert ids.max() == 1 and not void.any()
    scores = davis.score(tmp_path / "DAVIS", tmp_path / "results", year="2016")
    expected_global, expected_objects = _reference_scores({"cow": gt > 0}, {"cow": pred > 0})
    assert list(scores.per_object) == ["cow_1"]
    for key in davis.GLOBAL_KEYS:
        assert scores.global_scores[key] == pytest.approx(expected_global[key], abs=1e-12), key
    assert scores.global_scores["J-Mean"] < 1


# ----------------------------------------------------------------------------- real samples


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE_ROOT.is_dir(), reason="shared DAVIS-2016 sample data not present")
def test_real_davis2016_sample(tmp_path):
    annotations = SAMPLE_ROOT / "Annotations" / "480p"
    perfect = davis.score(SAMPLE_ROOT, annotations, year="2016", subset="sample")
    assert len(perfect.per_object) == 4
    for values in perfect.per_object.values():
        assert values == {"J-Mean": 1, "J-Recall": 1, "J-Decay": 0, "F-Mean": 1, "F-Recall": 1, "F-Decay": 0}
    kernel = np.ones((7, 7), np.uint8)
    for sequence in davis_data.read_sequence_list(SAMPLE_ROOT, "2016", "sample"):
        paths = sorted((annotations / sequence).glob("*.png"))
        for path in paths[1:-1]:  # the first and last frames are not scored
            eroded = cv2.erode(masks_io.read_mask(path), kernel)
            (tmp_path / sequence).mkdir(exist_ok=True)
            Image.fromarray(eroded).save(tmp_path / sequence / path.name, compress_level=1)
    eroded_scores = davis.score(SAMPLE_ROOT, tmp_path, year="2016", subset="sample")
    assert 0.5 < eroded_scores.global_scores["J-Mean"] < 1
    assert all(values["J-Mean"] < 1 for values in eroded_scores.per_object.values())


def _write_frames(root, sequence, names, shape):
    for name in names:
        path = root / "JPEGImages" / "480p" / sequence / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.zeros((*shape, 3), np.uint8))


def test_ground_truth_must_match_the_frames(small_tree):
    root, seq_dir = small_tree
    _write_frames(root, "seq", [f"{t:05d}" for t in range(4)], (10, 12))
    assert davis.score(root, seq_dir.parent).global_scores["J-Mean"] == 1.0  # Matching frames: scored as before.
    annotation = root / "Annotations" / "480p" / "seq" / "00002.png"
    annotation.rename(annotation.with_suffix(".bak"))  # A frame whose ground truth is missing: never scored.
    with pytest.raises(FileNotFoundError, match=r"'seq'.*00002.jpg; missing .*Annotations/480p/seq/00002.png"):
        davis.score(root, seq_dir.parent)
    annotation.with_suffix(".bak").rename(annotation)
    (root / "JPEGImages" / "480p" / "seq" / "00000.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"'seq'.*00000.png; missing .*JPEGImages/480p/seq/00000.jpg"):
        davis.score(root, seq_dir.parent)
