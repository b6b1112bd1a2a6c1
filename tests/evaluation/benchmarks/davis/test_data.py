"""DAVIS on disk (davis_data.py): annotation ids and void, sequence lists, results, videos to segment."""

import numpy as np
import pytest
from PIL import Image

from mer_jax.evaluation import masks_io
from mer_jax.evaluation.benchmarks.davis import data as davis_data
from tests import fake_data


def test_annotation_ids_hand_cases():
    raw = np.array([[0, 1, 255], [2, 0, 255]], np.uint8)
    ids, void = davis_data.annotation_ids(raw, "2017")
    np.testing.assert_array_equal(ids, [[0, 1, 0], [2, 0, 0]])
    np.testing.assert_array_equal(void, [[False, False, True], [False, False, True]])
    assert ids.dtype == np.uint8
    ids, void = davis_data.annotation_ids(np.array([[0, 255], [128, 0]], np.uint8), "2016")
    np.testing.assert_array_equal(ids, [[0, 1], [1, 0]])
    assert ids.dtype == np.uint8 and not void.any()
    with pytest.raises(ValueError, match="year"):
        davis_data.annotation_ids(raw, "2018")


@pytest.fixture()
def void_tree(tmp_path):
    """Two 2017 sequences; 'alpha' has a void row (255) in every annotation."""
    root = tmp_path / "DAVIS"
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("alpha\nbeta\n\n")
    alpha = np.zeros((3, 6, 8), np.uint8)
    alpha[:, 1:3, 2:5] = 1
    alpha[:, 4, :] = 255
    for t, frame in enumerate(alpha):
        masks_io.write_mask(root / "Annotations" / "480p" / "alpha" / f"{t:05d}.png", frame)
    return root, alpha


def test_read_ground_truth_sets_void_to_background(void_tree):
    root, alpha = void_tree
    ids, void, names = davis_data.read_ground_truth(root, "alpha", "2017")
    assert ids.shape == void.shape == (3, 6, 8) and ids.dtype == np.uint8
    assert names == ["00000", "00001", "00002"]
    np.testing.assert_array_equal(void, alpha == 255)
    np.testing.assert_array_equal(ids, np.where(alpha == 255, 0, alpha))
    assert davis_data.read_sequence_list(root, "2017", "val") == ["alpha", "beta"]
    with pytest.raises(FileNotFoundError, match="No annotation PNGs for sequence 'beta'"):
        davis_data.read_ground_truth(root, "beta", "2017")


def test_read_results_binarises_for_2016(tmp_path):
    mask = np.array([[0, 1], [2, 0]], np.uint8)
    masks_io.write_mask(tmp_path / "seq" / "00001.png", mask)
    np.testing.assert_array_equal(davis_data.read_results(tmp_path, "seq", ["00001"], (2, 2)), mask[None])
    np.testing.assert_array_equal(davis_data.read_results(tmp_path, "seq", ["00001"], (2, 2), binary=True), [mask > 0])


def test_read_video_2017_first_annotation_void_palette_and_names(tmp_path):
    root = tmp_path / "DAVIS"
    clips = fake_data.davis_tree(str(root), num_sequences=1, num_frames=4)
    first_path = root / "Annotations" / "480p" / "seq0" / "00000.png"
    first = clips["seq0"].masks[0].copy()
    first[0, :] = 255
    masks_io.write_mask(first_path, first)
    video = davis_data.read_video(root, "seq0", "2017")
    assert video.name == "seq0" and video.frame_names == ["00000", "00001", "00002", "00003"]
    assert video.frames.shape == (4, 48, 64, 3) and video.frames.dtype == np.uint8
    assert list(video.annotations) == [0] and video.output_size is None and video.flow is None
    np.testing.assert_array_equal(video.annotations[0], np.where(first == 255, 0, first))
    assert video.object_ids == [int(i) for i in np.unique(first) if i not in (0, 255)]
    np.testing.assert_array_equal(video.palette, masks_io.read_palette(first_path))


def test_read_video_2016_grey_annotation_is_one_object(tmp_path):
    root = tmp_path / "DAVIS"
    fake_data.davis_tree(str(root), num_sequences=1, num_frames=3)
    grey = np.zeros((48, 64), np.uint8)
    grey[10:20, 5:30] = 255
    Image.fromarray(grey).save(root / "Annotations" / "480p" / "seq0" / "00000.png")
    video = davis_data.read_video(root, "seq0", "2016")
    np.testing.assert_array_equal(video.annotations[0], grey > 0)
    assert video.object_ids == [1] and video.palette is None


def test_read_video_errors_name_the_file(tmp_path):
    root = tmp_path / "DAVIS"
    fake_data.davis_tree(str(root), num_sequences=1, num_frames=3)
    first = root / "Annotations" / "480p" / "seq0" / "00000.png"
    first.unlink()
    with pytest.raises(FileNotFoundError, match="missing first-frame annotation .*00000.png"):
        davis_data.read_video(root, "seq0", "2017")
    masks_io.write_mask(first, np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="annotation .*00000.png is \\(10, 10\\)"):
        davis_data.read_video(root, "seq0", "2017")


def test_read_video_refuses_a_missing_first_frame(tmp_path):
    # Without 00000.jpg, propagation used to start from the ground truth of 00001 (a better score).
    root = tmp_path / "DAVIS"
    fake_data.davis_tree(str(root), num_sequences=1, num_frames=4)
    (root / "JPEGImages" / "480p" / "seq0" / "00000.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"'seq0'.*Annotations/480p/seq0/00000.png; missing .*seq0/00000.jpg"):
        davis_data.read_video(root, "seq0", "2017")
    with pytest.raises(FileNotFoundError, match="first annotated frame has no image"):
        davis_data.read_video(root, "seq0", "2017")
    with pytest.raises(FileNotFoundError, match=r"'seq0'.*1 annotation\(s\) have no frame.*00000.jpg"):
        davis_data.read_ground_truth(root, "seq0", "2017")


def test_read_video_refuses_frames_and_annotations_that_disagree(tmp_path):
    root = tmp_path / "DAVIS"
    fake_data.davis_tree(str(root), num_sequences=1, num_frames=8)
    frames, annotations = root / "JPEGImages" / "480p" / "seq0", root / "Annotations" / "480p" / "seq0"
    (frames / "00005.jpg").unlink()  # A frame missing mid-sequence: its annotation has no frame.
    with pytest.raises(FileNotFoundError, match=r"00005.png; missing .*JPEGImages/480p/seq0/00005.jpg"):
        davis_data.read_video(root, "seq0", "2017")
    (annotations / "00005.png").unlink()
    (annotations / "00002.png").unlink()  # Annotated frames, one of them without its annotation.
    with pytest.raises(FileNotFoundError, match=r"1 frame\(s\) have no annotation: .*00002.jpg; missing .*00002.png"):
        davis_data.read_video(root, "seq0", "2017")
    with pytest.raises(FileNotFoundError, match=r"00002.jpg; missing .*Annotations/480p/seq0/00002.png"):
        davis_data.read_ground_truth(root, "seq0", "2017")
    for t in (1, 3, 4, 6, 7):  # Only the first frame annotated (test-dev): segmented, not scored.
        (annotations / f"{t:05d}.png").unlink()
    assert davis_data.read_video(root, "seq0", "2017").frame_names == ["00000", "00001", "00002", "00003", "00004",
                                                                       "00006", "00007"]  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"6 frame\(s\) have no annotation.*test-dev"):
        davis_data.read_ground_truth(root, "seq0", "2017")


def test_frames_are_matched_by_name_not_extension(tmp_path):
    root = tmp_path / "DAVIS"
    fake_data.davis_tree(str(root), num_sequences=1, num_frames=3)
    frames = root / "JPEGImages" / "480p" / "seq0"
    (frames / "00001.jpg").rename(frames / "00001.jpeg")
    video = davis_data.read_video(root, "seq0", "2017")
    assert video.frame_names == ["00000", "00001", "00002"] and video.frames.shape == (3, 48, 64, 3)
    (frames / "00001.jpg").write_bytes((frames / "00001.jpeg").read_bytes())
    with pytest.raises(ValueError, match="00001.jpeg and .*00001.jpg share the name '00001'"):
        davis_data.read_video(root, "seq0", "2017")
