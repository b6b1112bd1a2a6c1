"""`python -m mer_jax.track` on tiny videos: equal to the DAVIS evaluator on a DAVIS sequence, the mask
formats, resized processing, MP4 input, and errors that name the file and leave nothing written."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from configs import propagation as propagation_configs
from mer_jax import track
from mer_jax.data import resize
from mer_jax.evaluation import features, masks_io, protocol, vos
from mer_jax.evaluation.benchmarks.davis import evaluator as davis
from mer_jax.evaluation.benchmarks.user_video import data as user_video
from tests import fake_data

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE_ROOT = REPO.parent / "shared" / "data" / "davis2016_sample" / "DAVIS"
SUMMARY_KEYS = {
    "command", "video", "mask", "output", "encoder", "checkpoint", "preset", "frames", "objects", "object_ids",
    "frame_size", "processed_size", "seconds", "frames_per_s",
}  # fmt: skip


def small_presets():
    """The presets with windows for 48x64 frames (a 12x16 feature grid)."""
    presets = propagation_configs.presets()
    for name in track.PRESETS:
        presets[name].radius = 4
        presets[name].crw_context = 3
    return presets


def lab_setup(preset):
    """(lab encoder, the small preset for it) as `track` builds them."""
    defaults = propagation_configs.benchmark_config("davis")
    encoder = features.make_encoder(
        "lab", None, feature_batch=defaults.feature_batch, lab_mean=defaults.lab_mean, lab_std=defaults.lab_std
    )
    return encoder, protocol.make_preset(small_presets()[preset], "lab", defaults.lab_temperature)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis") / "DAVIS"
    fake_data.davis_tree(str(root))  # seq0 moves; seq1 is static.
    return root


def frames_of(root, sequence):
    return root / "JPEGImages" / "480p" / sequence


def annotation_of(root, sequence, frame="00000"):
    return root / "Annotations" / "480p" / sequence / f"{frame}.png"


def read_masks(folder):
    names = sorted(os.listdir(folder))
    return names, np.stack([masks_io.read_mask(folder / name) for name in names])


def assert_nothing_written(output, before=None):
    """The output folder is absent (or its listing unchanged) and no `.partial-` folder is left."""
    if before is None:
        assert not output.exists()
    else:
        assert listing(output) == before
    assert not [p for p in output.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def listing(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


@pytest.mark.parametrize("preset", ["mer", "crw"])
def test_davis_sequence_equals_the_davis_evaluator(davis_root, tmp_path, preset):
    encoder, propagation_preset = lab_setup(preset)
    evaluator = davis.Evaluator(
        davis_root=str(davis_root), year="2017", subset="val", sequences="seq0", save_overlays=False
    )
    evaluator.run(encoder, propagation_preset, str(tmp_path / "eval"))
    summary = track.track(
        str(frames_of(davis_root, "seq0")),
        str(annotation_of(davis_root, "seq0")),
        str(tmp_path / "out"),
        preset=preset,
        presets=small_presets(),
    )
    names, masks = read_masks(tmp_path / "out" / "masks")
    expected_names, expected = read_masks(tmp_path / "eval" / "seq0")
    assert names == expected_names == [f"{t:05d}.png" for t in range(8)]
    np.testing.assert_array_equal(masks, expected)
    assert masks[1:].any()  # Something propagated past the given frame.
    assert set(summary) == SUMMARY_KEYS
    assert summary["frames"] == 8 and summary["objects"] == 2 and summary["object_ids"] == [1, 2]
    assert summary["frame_size"] == summary["processed_size"] == [48, 64]
    assert summary["frames_per_s"] == pytest.approx(8 / summary["seconds"])
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert sorted(os.listdir(tmp_path / "out")) == ["masks", "overlay.mp4", "summary.json"]
    assert sorted(os.listdir(tmp_path)) == ["eval", "out"]  # No `.partial-` folder left.


def test_binary_grey_and_palette_masks(davis_root, tmp_path):
    static = frames_of(davis_root, "seq1")
    first = masks_io.read_mask(annotation_of(davis_root, "seq1"))
    grey = tmp_path / "grey.png"
    Image.fromarray(np.where(first > 0, 255, 0).astype(np.uint8)).save(grey)
    summary = track.track(str(static), str(grey), str(tmp_path / "grey"), presets=small_presets())
    assert summary["object_ids"] == [1]
    _, masks = read_masks(tmp_path / "grey" / "masks")
    np.testing.assert_array_equal(masks[0], first > 0)
    assert set(np.unique(masks)) == {0, 1} and (masks[-1] == (first > 0)).mean() > 0.9  # A still video.
    np.testing.assert_array_equal(
        masks_io.read_palette(tmp_path / "grey" / "masks" / "00003.png"), masks_io.davis_palette()
    )

    ids = np.where(first == 1, 3, np.where(first == 2, 7, 0)).astype(np.uint8)
    ids[:2] = 255  # Void: background.
    palette = np.random.default_rng(0).integers(0, 256, (256, 3)).astype(np.uint8)
    masks_io.write_mask(tmp_path / "palette.png", ids, palette)
    summary = track.track(str(static), str(tmp_path / "palette.png"), str(tmp_path / "pal"), presets=small_presets())
    assert summary["object_ids"] == [3, 7]
    _, masks = read_masks(tmp_path / "pal" / "masks")
    np.testing.assert_array_equal(masks[0], np.where(ids == 255, 0, ids))
    assert set(np.unique(masks[-1])) == {0, 3, 7}
    np.testing.assert_array_equal(masks_io.read_palette(tmp_path / "pal" / "masks" / "00005.png"), palette)


def test_grey_mask_with_several_values_gives_those_ids(tmp_path):
    raw = np.zeros((6, 8), np.uint8)
    raw[1:3, 1:3], raw[3:5, 4:7] = 2, 5
    Image.fromarray(raw).save(tmp_path / "m.png")
    ids, palette = user_video.read_first_mask(str(tmp_path / "m.png"))
    np.testing.assert_array_equal(ids, raw)
    np.testing.assert_array_equal(palette, masks_io.davis_palette())


def test_max_height_processes_resized_and_writes_the_original_size(davis_root, tmp_path):
    summary = track.track(
        str(frames_of(davis_root, "seq0")),
        str(annotation_of(davis_root, "seq0")),
        str(tmp_path / "out"),
        preset="mer",
        max_height=32,
        presets=small_presets(),
    )
    assert summary["frame_size"] == [48, 64] and summary["processed_size"] == [32, 43]
    _, masks = read_masks(tmp_path / "out" / "masks")
    assert masks.shape == (8, 48, 64) and masks[1:].any()

    video = user_video.read_video(str(frames_of(davis_root, "seq0")), str(annotation_of(davis_root, "seq0")), 1000)
    frames = np.stack([resize.resize_frame(frame, (32, 43)) for frame in video.frames])
    encoder, preset = lab_setup("mer")
    [(_, expected)] = vos.segment_videos([video._replace(frames=frames, output_size=(48, 64))], encoder, preset)
    np.testing.assert_array_equal(masks, expected)
    capture = cv2.VideoCapture(str(tmp_path / "out" / "overlay.mp4"))
    ok, frame = capture.read()
    assert ok and frame.shape == (32, 42, 3)  # Drawn at the processing size (even: MPEG-4 needs it).
    capture.release()


def write_mp4(path, frames, fps=5.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames.shape[2:0:-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_mp4_input_names_frames_by_number(davis_root, tmp_path):
    clip = user_video.read_frames(str(frames_of(davis_root, "seq0")))[0]
    write_mp4(tmp_path / "clip.mp4", clip)
    summary = track.track(
        str(tmp_path / "clip.mp4"),
        str(annotation_of(davis_root, "seq0")),
        str(tmp_path / "out"),
        presets=small_presets(),
    )
    assert summary["frames"] == 8
    assert sorted(os.listdir(tmp_path / "out" / "masks")) == [f"{t:05d}.png" for t in range(8)]
    capture = cv2.VideoCapture(str(tmp_path / "out" / "overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0) and capture.get(cv2.CAP_PROP_FRAME_COUNT) == 8
    capture.release()


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_are_named_and_nothing_is_written(davis_root, tmp_path):
    output = tmp_path / "out"
    mask = annotation_of(davis_root, "seq0")

    def refused(video, mask, match):
        with pytest.raises(user_video.UserInputError, match=match):
            track.track(str(video), str(mask), str(output), presets=small_presets())
        assert_nothing_written(output)

    folder = tmp_path / "frames"
    shutil.copytree(frames_of(davis_root, "seq0"), folder)
    (folder / "00003.jpg").write_bytes(b"not a jpeg")
    refused(folder, mask, r"frames/00003.jpg.*Replace or remove")
    (tmp_path / "clip.mp4").write_bytes(b"not a video")
    refused(tmp_path / "clip.mp4", mask, r"clip.mp4.*Re-encode")
    refused(tmp_path / "missing.mp4", mask, r"missing.mp4 does not exist")

    masks_io.write_mask(tmp_path / "small.png", np.ones((24, 32), np.uint8))
    refused(frames_of(davis_root, "seq0"), tmp_path / "small.png", r"small.png is 32x24 \(WxH\).* 64x48.*draw the mask")
    masks_io.write_mask(tmp_path / "void.png", np.full((48, 64), 255, np.uint8))
    refused(frames_of(davis_root, "seq0"), tmp_path / "void.png", r"void.png has no object")
    Image.new("RGB", (64, 48), (200, 0, 0)).save(tmp_path / "colour.png")
    refused(frames_of(davis_root, "seq0"), tmp_path / "colour.png", r"colour.png.*'RGB'.*Save the first-frame mask")

    with pytest.raises(user_video.UserInputError, match=r"--checkpoint .*frames is neither an export"):
        track.track(str(folder), str(mask), str(output), checkpoint=str(folder))
    assert_nothing_written(output)


def test_output_folder_rules(davis_root, tmp_path):
    video, mask = str(frames_of(davis_root, "seq1")), str(annotation_of(davis_root, "seq1"))
    output = tmp_path / "out"
    output.mkdir()  # An empty folder is fine.
    track.track(video, mask, str(output), preset="mer", presets=small_presets())
    before = listing(output)
    with pytest.raises(user_video.UserInputError, match=r"out holds another run.*--overwrite"):
        track.track(video, mask, str(output), preset="crw", presets=small_presets())
    assert_nothing_written(output, before)
    assert json.loads((output / "summary.json").read_text())["preset"] == "mer"

    track.track(video, mask, str(output), preset="crw", overwrite=True, presets=small_presets())
    assert json.loads((output / "summary.json").read_text())["preset"] == "crw"
    assert listing(output) == before
    assert_nothing_written(output, before)

    (output / "notes.txt").write_text("mine")
    before = listing(output)
    with pytest.raises(user_video.UserInputError, match=r"out holds files that track did not write \(notes.txt\)"):
        track.track(video, mask, str(output), overwrite=True, presets=small_presets())
    assert_nothing_written(output, before)

    other = tmp_path / "other"
    other.mkdir()
    (other / "photo.jpg").write_bytes(b"x")
    with pytest.raises(user_video.UserInputError, match=r"other holds files .*photo.jpg.*choose another"):
        track.track(video, mask, str(other), overwrite=True, presets=small_presets())
    assert listing(other) == [pathlib.Path("photo.jpg")]


def test_a_failure_while_writing_leaves_nothing(davis_root, tmp_path, monkeypatch):
    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(track, "write_overlay", broken)
    with pytest.raises(OSError, match="disk full"):
        track.track(
            str(frames_of(davis_root, "seq1")), str(annotation_of(davis_root, "seq1")), str(tmp_path / "out"),
            presets=small_presets(),
        )  # fmt: skip
    assert_nothing_written(tmp_path / "out")


# ----------------------------------------------------------------------------- command line


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "mer_jax.track", *args], cwd=REPO, capture_output=True, text=True, check=False
    )


@pytest.mark.slow
def test_command_line(davis_root, tmp_path):
    output = tmp_path / "out"
    completed = run_cli(
        f"--video={frames_of(davis_root, 'seq1')}",
        f"--mask={annotation_of(davis_root, 'seq1')}",
        f"--output={output}",
        "--preset=crw",
        "--max_height=40",
    )
    assert completed.returncode == 0, completed.stderr
    assert "track: 8 frames, 2 object(s) in" in completed.stdout
    summary = json.loads((output / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS and summary["preset"] == "crw" and summary["processed_size"] == [40, 53]
    assert sorted(os.listdir(output / "masks")) == [f"{t:05d}.png" for t in range(8)]
    assert masks_io.read_mask(output / "masks" / "00007.png").shape == (48, 64)

    completed = run_cli(
        f"--video={frames_of(davis_root, 'seq1')}", f"--mask={tmp_path / 'nope.png'}", f"--output={output}2"
    )
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines()[-1].startswith(f"error: Mask file not found: {tmp_path / 'nope.png'}")
    assert not (tmp_path / "out2").exists()


# ----------------------------------------------------------------------------- real DAVIS sample


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE_ROOT.is_dir(), reason="shared DAVIS-2016 sample data not present")
def test_real_davis_sample_equals_the_davis_evaluator(tmp_path):
    """The first 3 frames of blackswan (854x480, grey 0/255 masks) at the evaluation's own `mer` preset."""
    root = tmp_path / "DAVIS"
    for kind, extension in (("JPEGImages", "jpg"), ("Annotations", "png")):
        (root / kind / "480p" / "blackswan").mkdir(parents=True)
        for t in range(3):  # DAVIS scores all but the first and last frame.
            name = f"{t:05d}.{extension}"
            shutil.copy(SAMPLE_ROOT / kind / "480p" / "blackswan" / name, root / kind / "480p" / "blackswan" / name)
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("blackswan\n")
    defaults = propagation_configs.benchmark_config("davis")
    encoder, _ = lab_setup("mer")
    preset = protocol.make_preset(defaults.presets.mer, "lab", defaults.lab_temperature)
    evaluator = davis.Evaluator(davis_root=str(root), year="2016", subset="val", sequences=None, save_overlays=False)
    scores = evaluator.run(encoder, preset, str(tmp_path / "eval"))
    summary = track.track(
        str(frames_of(root, "blackswan")), str(annotation_of(root, "blackswan")), str(tmp_path / "out")
    )
    assert summary["frame_size"] == summary["processed_size"] == [480, 854] and summary["object_ids"] == [1]
    names, masks = read_masks(tmp_path / "out" / "masks")
    expected_names, expected = read_masks(tmp_path / "eval" / "blackswan")
    assert names == expected_names
    np.testing.assert_array_equal(masks, expected)
    assert scores["J-Mean"] > 0.8
