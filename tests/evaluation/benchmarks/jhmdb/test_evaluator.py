"""JHMDB: PCK against hand-computed cases, heatmap encode/decode, and the loader on a fake JHMDB tree."""

import numpy as np
import pytest
import scipy.io
from PIL import Image

from mer_jax.evaluation.benchmarks.jhmdb import data as jhmdb_data
from mer_jax.evaluation.benchmarks.jhmdb import evaluator as jhmdb
from mer_jax.evaluation.benchmarks.jhmdb import pck

J = jhmdb_data.NUM_JOINTS


def box_frame():
    """One frame: joints 0 and 1 span a 30 x 40 box (diagonal 50, reference 0.6 * 50 = 30 px)."""
    gt = np.full((1, J, 2), 10.0)
    gt[0, 0] = [0.0, 0.0]
    gt[0, 1] = [30.0, 40.0]
    return gt, np.ones((1, J), bool)


def test_pck_thresholds_just_inside_and_outside():
    gt, visible = box_frame()
    pred = gt.copy()
    pred[0, 2, 0] += 2.9  # < 0.1 * 30 = 3: correct at both thresholds
    pred[0, 3, 1] += 3.1  # correct only at 0.2 (< 6)
    pred[0, 4] += [3.66, 4.88]  # distance 6.1: wrong at both
    pred[0, 5, 0] -= 5.9
    out = pck.pck(pred, gt, visible)
    at1, at2 = out["per_joint"]["PCK@0.1"], out["per_joint"]["PCK@0.2"]
    np.testing.assert_array_equal(at1[[2, 3, 4, 5]], [1, 0, 0, 0])
    np.testing.assert_array_equal(at2[[2, 3, 4, 5]], [1, 1, 0, 1])
    assert out["PCK@0.1"] == pytest.approx(12 / 15)
    assert out["PCK@0.2"] == pytest.approx(14 / 15)


def test_frame_pck_scores_each_frame_alone_after_the_first():
    gt, visible = box_frame()
    gt, visible = np.repeat(gt, 4, 0), np.repeat(visible, 4, 0)
    pred = gt.copy()
    pred[2, :3, 0] += 3.1  # 3 of 15 joints beyond 0.1 x 30 px in frame 2
    visible[3, 1:] = False  # frame 3: one visible joint, no box: not scored
    np.testing.assert_allclose(jhmdb.frame_pck(pred, gt, visible), [np.nan, 1.0, 12 / 15, np.nan])


def test_pck_ignores_invisible_joints_and_excludes_never_visible_joints():
    gt, visible = box_frame()
    gt = np.concatenate([gt, gt])
    visible = np.concatenate([visible, visible])
    visible[:, 7] = False  # never visible: NaN, out of the mean
    visible[1, 8] = False  # visible once
    pred = gt.copy()
    pred[:, 7] += 1000.0
    pred[0, 8] += 100.0  # wrong where visible
    pred[1, 9] += 100.0  # wrong in frame 1 only
    gt[1, 10] = [500.0, 500.0]  # invisible joints neither count nor widen the box
    visible[1, 10] = False
    pred[1, 10] = [500.0, 500.0]
    out = pck.pck(pred, gt, visible, thresholds=(0.1,))
    per_joint = out["per_joint"]["PCK@0.1"]
    assert per_joint.shape == (J,)
    assert np.isnan(per_joint[7])
    assert per_joint[8] == 0.0 and per_joint[9] == 0.5 and per_joint[10] == 1.0
    assert out["PCK@0.1"] == pytest.approx((11 + 0.0 + 0.5 + 1.0) / 14)
    assert "PCK@0.2" not in out


def test_pck_ignores_frames_with_fewer_than_two_visible_joints():
    gt, visible = box_frame()
    sparse_visible = np.zeros((1, J), bool)
    sparse_visible[0, 3] = True
    pred = np.concatenate([gt, gt + 100.0])  # frame 1 is all wrong but has a single visible joint
    out = pck.pck(pred, np.concatenate([gt, gt]), np.concatenate([visible, sparse_visible]))
    assert out["PCK@0.1"] == 1.0 and out["PCK@0.2"] == 1.0
    only_sparse = pck.pck(gt + 100.0, gt, sparse_visible)
    assert np.isnan(only_sparse["PCK@0.1"]) and np.isnan(only_sparse["per_joint"]["PCK@0.2"]).all()


def test_pck_for_videos_skips_frame_zero_and_pools_frames():
    gt, visible = box_frame()
    gt3 = np.repeat(gt, 3, axis=0)
    vis3 = np.repeat(visible, 3, axis=0)
    pred_a = gt3.copy()
    pred_a[0] += 100.0  # frame 0: never scored
    pred_a[1, 0] += 100.0  # one wrong joint
    gt2, vis2 = gt3[:2], vis3[:2]
    pred_b = gt2.copy()
    pred_b[1, 0] += 100.0
    out = pck.pck_for_videos([(pred_a, gt3, vis3), (pred_b, gt2, vis2)])
    # Joint 0: 1 correct of 3 scored frames; the others all correct.
    np.testing.assert_allclose(out["per_joint"]["PCK@0.1"], [1 / 3] + [1.0] * (J - 1))
    assert out["PCK@0.2"] == pytest.approx((1 / 3 + J - 1) / J)
    assert len(pck.JOINT_NAMES) == J


def write_video(root, cls, video, pos_img, num_frames, size=(320, 240)):
    frames_dir = root / "Rename_Images" / cls / video
    frames_dir.mkdir(parents=True)
    for t in range(num_frames):
        Image.fromarray(np.full((size[1], size[0], 3), (t, 2 * t, 3 * t), np.uint8)).save(
            frames_dir / f"{t + 1:05d}.png"
        )
    joints_dir = root / "joint_positions" / cls / video
    joints_dir.mkdir(parents=True)
    scipy.io.savemat(joints_dir / "joint_positions.mat", {"pos_img": pos_img})


def fake_jhmdb(root):
    splits = root / "splits"
    splits.mkdir()
    (splits / "pour_test_split1.txt").write_text("pour_a.avi 1 \nshoot_b.avi 2\n\n")
    (splits / "brush_hair_test_split1.txt").write_text("hair_c.avi 2\n")
    (splits / "pour_test_split2.txt").write_text("pour_a.avi 2\n")
    rng = np.random.default_rng(0)
    pos_img = rng.uniform(1.0, 200.0, size=(2, J, 4))
    pos_img[0, 3, 1] = 0.5  # 0-based x = -0.5: outside
    pos_img[1, 4, 2] = 241.0  # 0-based y = 240 = H: outside
    pos_img[0, 5, 0] = 320.0  # 0-based x = 319: inside
    write_video(root, "shoot", "shoot_b", pos_img, num_frames=3)  # .mat has one frame more than images
    return pos_img


def test_list_test_videos_and_read_video(tmp_path):
    pos_img = fake_jhmdb(tmp_path)
    assert jhmdb_data.list_test_videos(tmp_path) == [("brush_hair", "hair_c"), ("pour", "shoot_b")]
    assert jhmdb_data.list_test_videos(tmp_path, split=2) == [("pour", "pour_a")]
    video = jhmdb_data.read_video(tmp_path, "shoot", "shoot_b")
    assert video.frames.shape == (3, 240, 320, 3) and video.frames.dtype == np.uint8
    np.testing.assert_array_equal(video.frames[2, 0, 0], [2, 4, 6])
    assert video.joints.shape == (3, J, 2) and video.joints.dtype == np.float32
    np.testing.assert_allclose(video.joints, np.transpose(pos_img, (2, 1, 0))[:3] - 1.0, rtol=1e-6)
    expected_visible = np.ones((3, J), bool)
    expected_visible[1, 3] = expected_visible[2, 4] = False
    np.testing.assert_array_equal(video.visible, expected_visible)


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="splits"):
        jhmdb_data.list_test_videos(tmp_path)
    fake_jhmdb(tmp_path)
    with pytest.raises(FileNotFoundError, match="_test_split3.txt"):
        jhmdb_data.list_test_videos(tmp_path, split=3)
    (tmp_path / "splits" / "bad_test_split1.txt").write_text("video.avi\n")
    with pytest.raises(ValueError, match="bad_test_split1.txt:1"):
        jhmdb_data.list_test_videos(tmp_path)
    write_video(tmp_path, "c", "wrong_shape", np.zeros((2, 14, 3)), num_frames=3)
    with pytest.raises(ValueError, match="wrong_shape.*pos_img has shape"):
        jhmdb_data.read_video(tmp_path, "c", "wrong_shape")
    write_video(tmp_path, "c", "no_field", np.zeros((2, J, 3)), num_frames=1)
    scipy.io.savemat(tmp_path / "joint_positions" / "c" / "no_field" / "joint_positions.mat", {"pos": 1})
    with pytest.raises(ValueError, match="no_field.*no field 'pos_img'"):
        jhmdb_data.read_video(tmp_path, "c", "no_field")
    (tmp_path / "joint_positions" / "c" / "no_field" / "joint_positions.mat").unlink()
    with pytest.raises(FileNotFoundError, match="no_field/joint_positions.mat"):
        jhmdb_data.read_video(tmp_path, "c", "no_field")
    with pytest.raises(FileNotFoundError, match="Rename_Images/c/absent"):
        jhmdb_data.read_video(tmp_path, "c", "absent")
    write_video(tmp_path, "c", "broken_png", np.ones((2, J, 2)), num_frames=2)
    (tmp_path / "Rename_Images" / "c" / "broken_png" / "00002.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="00002.png"):
        jhmdb_data.read_video(tmp_path, "c", "broken_png")


def test_frames_are_matched_to_joints_by_number(tmp_path):
    write_video(tmp_path, "c", "v", np.ones((2, J, 4)), num_frames=4, size=(32, 24))
    frames_dir = tmp_path / "Rename_Images" / "c" / "v"
    assert jhmdb_data.read_video(tmp_path, "c", "v").frames.shape == (4, 24, 32, 3)
    (frames_dir / "00001.png").rename(tmp_path / "first.png")  # Frame 2 would take frame 1's joints.
    with pytest.raises(
        FileNotFoundError, match="matched to the joints by number.*1 frame.*Rename_Images/c/v/00001.png"
    ):
        jhmdb_data.read_video(tmp_path, "c", "v")
    (tmp_path / "first.png").rename(frames_dir / "00001.png")
    (frames_dir / "00003.png").rename(frames_dir / "00005.png")  # A gap: 00005.png would take frame 3's joints.
    with pytest.raises(FileNotFoundError, match="Rename_Images/c/v/00003.png"):
        jhmdb_data.read_video(tmp_path, "c", "v")
    (frames_dir / "00005.png").rename(frames_dir / "00003.png")
    (frames_dir / "frame.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"named 00001.png, 00002.png.*\['frame.png'\]"):
        jhmdb_data.read_video(tmp_path, "c", "v")
    (frames_dir / "frame.png").unlink()
    (frames_dir / "00005.png").write_bytes((frames_dir / "00004.png").read_bytes())  # An image without joints.
    with pytest.raises(ValueError, match="joint_positions.mat annotates 4 frames but .* has 5; .*00005.png and later"):
        jhmdb_data.read_video(tmp_path, "c", "v")
