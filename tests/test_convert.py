"""mer_jax.convert: published PyTorch encoders, saved as their projects save them, give our features.

Each architecture is built in PyTorch with random weights and BatchNorm statistics
(`tests/torch_encoders.py`), saved in its project's layout, converted, loaded as an export and
applied to the same normalised frames: features equal PyTorch's within 1e-4 (relative to their
scale) at two frame sizes, one with odd sides.
"""

import json
import os

import cv2
import numpy as np
import pytest

from configs import synthetic as synthetic_config
from mer_jax import color, convert, evaluate, export
from mer_jax.models import torch_resnet

torch = pytest.importorskip("torch")
torch_encoders = pytest.importorskip("tests.torch_encoders")

SIZES = ((48, 80), (37, 51))
# arch -> (project layout, the PyTorch model)
CASES = {
    "crw": ("crw", lambda: torch_encoders.TorchvisionResNet("basic", (1, 2, 1), "max", "reflect")),
    "vfs_r18": ("vfs", lambda: torch_encoders.TorchvisionResNet("basic", (1, 2, 1), "max")),
    "vfs_r50": ("vfs", lambda: torch_encoders.TorchvisionResNet("bottleneck", (1, 2, 1), "max")),
    "stt_r18_d8": ("stt", lambda: torch_encoders.TorchvisionResNet("basic", (1, 2, 2), "none")),
    "stt_r18_d4": ("stt", lambda: torch_encoders.TorchvisionResNet("basic", (1, 1, 1), "avg")),
    "stt_r50_d8": ("stt", lambda: torch_encoders.TorchvisionResNet("bottleneck", (1, 2, 2), "none")),
    "stt_r50_d4": ("stt", lambda: torch_encoders.TorchvisionResNet("bottleneck", (1, 1, 1), "avg")),
    "mast": ("mast", lambda: torch_encoders.StrideFourModel("mast")),
    "mer": ("mer", lambda: torch_encoders.StrideFourModel("mer")),
}
SLOW = {"stt_r50_d8", "stt_r50_d4"}  # the same code as vfs_r50 and stt_r18_*: kept out of the fast tier


def _converted(tmp_path, arch, seed=0):
    project, build = CASES[arch]
    model = torch_encoders.randomize(build(), seed)
    path = os.path.join(tmp_path, f"{arch}.pth")
    torch_encoders.save_as_project(model, project, path)
    record = convert.convert(path, arch, os.path.join(tmp_path, "export"))
    return model, record, export.load_for_inference(os.path.join(tmp_path, "export"))


def _inputs(exported, frames):
    """The normalised frames our export feeds its network (what the PyTorch model gets too)."""
    if exported.converted["architecture"] == "torch_resnet":
        return np.asarray(torch_resnet.normalize_input(frames, **exported.converted["input"]))
    data = exported.config.data
    return np.asarray(color.uint8_rgb_to_normalized_lab(frames, tuple(data.lab_mean), tuple(data.lab_std)))


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in CASES])
def test_converted_features_equal_pytorch_at_two_frame_sizes(tmp_path, arch):
    model, record, exported = _converted(tmp_path, arch)
    rng = np.random.default_rng(1)
    for height, width in SIZES:
        frames = rng.integers(0, 256, (2, height, width, 3), np.uint8)
        want = torch_encoders.features(model, _inputs(exported, frames))
        got = np.asarray(export.embed(exported, frames))
        stride = record["output_stride"]
        assert got.shape == want.shape == (2, -(-height // stride), -(-width // stride), want.shape[-1])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_the_export_records_input_stride_and_what_was_set_aside(tmp_path):
    _, record, exported = _converted(tmp_path, "crw")
    assert record["input"] == {"colour": "rgb", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert record["output_stride"] == exported.output_stride == 8
    assert record["skipped"]["outside the encoder"] == ["selfsim_fc.0.weight"]
    assert all(k.startswith("encoder.model.layer4.") for k in record["skipped"]["not used at evaluation"])
    assert len(record["skipped"]["BatchNorm counters"]) == 20  # 1 + 2 x (2 + 2 + 3 + 3) in layers 1-4
    with open(tmp_path / "export" / convert.CONVERTED) as f:
        assert json.load(f)["source"]["sha256"] == record["source"]["sha256"]
    assert not exported.uses_flow and not exported.has_ven
    (tmp_path / "m").mkdir()
    _, mer_record, mer_exported = _converted(tmp_path / "m", "mer")
    assert mer_record["output_stride"] == mer_exported.output_stride == 4
    assert mer_record["input"]["colour"] == "lab"
    assert len(mer_record["skipped"]["not used at evaluation"]) == 2 + 8 * 4  # colorizer + 8 blocks' SE


def test_the_input_normalisation_is_the_projects():
    frames = np.random.default_rng(0).integers(0, 256, (1, 5, 7, 3), np.uint8)
    rgb = np.asarray(torch_resnet.normalize_input(frames, "rgb", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    # VFS: RGB 0-255 minus (123.675, 116.28, 103.53) over (58.395, 57.12, 57.375): the same numbers.
    vfs = (frames.astype(np.float64) - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]
    np.testing.assert_allclose(rgb, vfs, atol=1e-5)
    # MAST / MER-code / STT: OpenCV's float Lab of RGB / 255, minus (50, 0, 0), over (50, 127, 127);
    # OpenCV interpolates the sRGB gamma with a spline, up to ~0.35 Lab units off (tests/test_color.py).
    lab = np.asarray(torch_resnet.normalize_input(frames, "lab", (50, 0, 0), (50, 127, 127)))
    opencv = cv2.cvtColor(frames[0].astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    np.testing.assert_allclose(lab[0] * [50, 127, 127] + [50, 0, 0], opencv, atol=0.5)


def _save_vfs(tmp_path, edit):
    model = torch_encoders.randomize(torch_encoders.TorchvisionResNet("basic", (1, 2, 1), "max"), 0)
    state = model.state_dict()
    edit(state)
    path = os.path.join(tmp_path, "edited.pth")
    torch.save({"state_dict": state}, path)
    return path


def test_missing_unexpected_and_misshapen_keys_are_listed_by_name(tmp_path):
    def edit(state):
        del state["layer2.0.downsample.0.weight"]
        state["layer1.0.conv9.weight"] = torch.zeros(1)
        state["bn1.running_var"] = torch.ones(65)

    path = _save_vfs(tmp_path, edit)
    with pytest.raises(convert.KeyMismatchError) as error:
        convert.convert(path, "vfs_r18", str(tmp_path / "out"))
    message = str(error.value)
    assert "missing (1): layer2.0.downsample.0.weight" in message
    assert "unexpected (1): layer1.0.conv9.weight" in message
    assert "bn1.running_var: checkpoint (65,), architecture (64,)" in message
    assert not os.path.exists(tmp_path / "out")


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = _save_vfs(tmp_path, lambda state: None)
    with pytest.raises(ValueError, match="no key starts with 'backbone.'"):
        convert.convert(path, "stt_r18_d8", str(tmp_path / "stt"))
    with pytest.raises(convert.KeyMismatchError, match="missing"):
        convert.convert(path, "vfs_r50", str(tmp_path / "r50"))
    with pytest.raises(ValueError, match="--arch must be one of"):
        convert.convert(path, "resnet18", str(tmp_path / "x"))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/ran",))

    path = str(tmp_path / "evil.pth")
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": Payload()}, path)
    with pytest.raises(Exception, match="system") as error:
        convert.convert(path, "vfs_r18", str(tmp_path / "out"))
    assert type(error.value).__name__ == "UnsafeCheckpointError"
    assert not os.path.exists(tmp_path / "ran")


def test_a_converted_stride_8_encoder_is_evaluated_with_a_stride_8_preset_only(tmp_path):
    _converted(tmp_path, "crw")
    config = synthetic_config.get_config()
    config.update(dict(encoder="trained", checkpoint=str(tmp_path / "export"), num_videos=2, num_frames=5))
    config.update(dict(num_objects=2, output=str(tmp_path / "eval"), image_size=96))
    with pytest.raises(
        ValueError, match=r"meant for encoders of output stride 4 .* Use a preset for stride 8 \(crw_os8"
    ):
        evaluate.evaluate(config)
    config.preset, config.presets.crw_os8.radius = "crw_os8", 3  # a local window on the 12x12 grid
    summary = evaluate.evaluate(config)
    assert 0.0 <= summary["results"]["J&F-Mean"] <= 1.0 and summary["results"]["objects"] == 4
    assert summary["floors"]["lab"]["objects"] == 4  # the lab floor propagated at stride 8 too
