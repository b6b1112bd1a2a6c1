"""Tests of mer_jax/torch_checkpoint.py: torch.save files (zip and legacy) read back exactly without
torch, safetensors parsed by hand, and pickles that would run code refused before they do."""

import argparse
import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import uuid
import zipfile

import ml_dtypes
import numpy as np
import pytest

from mer_jax import torch_checkpoint
from mer_jax.torch_checkpoint import UnsafeCheckpointError, load_state, state_dict

_LEGACY_HEADER = b"".join(
    pickle.dumps(x, protocol=2)
    for x in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
)


def _write_torch_zip(path, data_pkl: bytes, storages: dict[str, bytes]):
    """A zip laid out as torch.save lays it out, with `data_pkl` as its pickle."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")


def _tensor_pickle(numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """A pickle of {'t': tensor} as torch writes it (FloatStorage '0' of `numel` elements),
    written opcode by opcode so that no torch is needed."""
    ints = lambda xs: b"(" + b"".join(b"I%d\n" % x for x in xs) + b"t"  # noqa: E731
    storage = b"(Vstorage\nctorch\nFloatStorage\nV0\nVcpu\nI%d\ntQ" % numel
    args = b"(" + storage + b"I%d\n" % offset + ints(size) + ints(stride) + b"I00\nccollections\nOrderedDict\n)Rt"
    return b"\x80\x02(Vt\nctorch._utils\n_rebuild_tensor_v2\n" + args + b"Rd."


def _torch_dtype_as_numpy(tensor):
    import torch

    return ml_dtypes.bfloat16 if tensor.dtype == torch.bfloat16 else tensor.detach().numpy().dtype


def _assert_same(array, tensor):
    assert isinstance(array, np.ndarray), type(array)
    assert array.dtype == _torch_dtype_as_numpy(tensor) and array.shape == tuple(tensor.shape)
    if array.dtype == ml_dtypes.bfloat16:
        np.testing.assert_array_equal(array.astype(np.float32), tensor.detach().float().numpy())
    else:
        np.testing.assert_array_equal(array, tensor.detach().numpy())


def _checkpoint():
    """A checkpoint holding each kind of tensor a state dict carries, with their torch values."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    model = collections.OrderedDict(
        [
            ("conv.weight", torch.randn(8, 3, 3, 3, generator=g)),
            ("bn.running_mean", torch.randn(8, generator=g)),
            ("bn.running_var", torch.rand(8, generator=g)),
            ("bn.num_batches_tracked", torch.tensor(7)),
            ("half", torch.randn(5, generator=g).half()),
            ("bf16", torch.randn(2, 3, generator=g).bfloat16()),
            ("transposed", base.t()),
            ("shared", base),
            ("shared_column", base[1:, 2]),
            ("param", torch.nn.Parameter(torch.randn(3, generator=g))),
            ("ints", torch.arange(-3, 3, dtype=torch.int32)),
            ("bytes", torch.arange(250, 256, dtype=torch.uint8)),
            ("mask", torch.tensor([True, False, True])),
            ("uint16", torch.tensor([1, 65535], dtype=torch.uint16)),
            ("empty", torch.zeros(0, 3)),
        ]
    )
    meta = {"best": np.float64(0.25), "hist": np.arange(3, dtype=">i4"), "pair": (torch.ones(2), [torch.zeros(1)])}
    meta["milestones"] = collections.Counter([30, 60, 60])  # as MultiStepLR's state_dict holds them
    return {"model": model, "epoch": 3, "args": argparse.Namespace(lr=0.1, arch="resnet18"), "meta": meta}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_round_trip_is_exact(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    obj = _checkpoint()
    torch.save(obj, tmp_path / "c.pth", _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(tmp_path / "c.pth") == zip_format

    loaded = load_state(str(tmp_path / "c.pth"))

    assert list(loaded["model"]) == list(obj["model"])
    for name, tensor in obj["model"].items():
        _assert_same(loaded["model"][name], tensor)
    assert loaded["model"]["bn.num_batches_tracked"].shape == () and loaded["model"]["transposed"].flags.c_contiguous
    assert loaded["epoch"] == 3 and loaded["args"].lr == 0.1 and loaded["args"].arch == "resnet18"
    assert loaded["meta"]["best"] == np.float64(0.25) and loaded["meta"]["best"].dtype == np.float64
    np.testing.assert_array_equal(loaded["meta"]["hist"], [0, 1, 2])
    _assert_same(loaded["meta"]["pair"][0], obj["meta"]["pair"][0])
    _assert_same(loaded["meta"]["pair"][1][0], obj["meta"]["pair"][1][0])
    assert loaded["meta"]["milestones"] == collections.Counter({30: 1, 60: 2})
    assert set(state_dict(loaded)) == set(obj["model"])


def test_module_state_dict_is_found(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    net(torch.randn(2, 3, 8, 8))  # training mode: the BN running statistics move
    torch.save({"state_dict": net.state_dict(), "meta": {"epoch": 5, "CLASSES": ("a", "b")}}, tmp_path / "m.pth")
    torch.save(net.state_dict(), tmp_path / "bare.pth")

    loaded = load_state(str(tmp_path / "m.pth"))
    for found in (
        state_dict(loaded),
        state_dict(loaded, "state_dict"),
        state_dict(load_state(str(tmp_path / "bare.pth"))),
    ):
        assert list(found) == list(net.state_dict())
        for name, tensor in net.state_dict().items():
            _assert_same(found[name], tensor)
    assert loaded["meta"] == {"epoch": 5, "CLASSES": ("a", "b")}
    with pytest.raises(KeyError, match=r"'nope'.*\['state_dict', 'meta'\]"):
        state_dict(loaded, "nope")
    with pytest.raises(ValueError, match="'meta': 'dict'"):
        state_dict({"meta": {"epoch": 5}})


def test_state_dict_choice_and_errors():
    weights = {"w": np.ones(2), "b": np.zeros(1)}
    assert state_dict({"net": {**weights, "_metadata": {"": 1}}, "epoch": 3}) == weights
    assert state_dict({"state_dict": {}, "model": weights}) == weights
    assert state_dict({"ema": weights, "model": weights}, key="ema") == weights
    with pytest.raises(ValueError, match="holding no arrays"):
        state_dict({"epoch": 3}, key="epoch")
    with pytest.raises(ValueError, match="'epoch': 'int'"):
        state_dict({"epoch": 3, "w": np.ones(2)})


def test_handmade_zip_reads_strides_and_offsets_without_torch(tmp_path):
    storage = np.arange(12, dtype=np.float32)
    _write_torch_zip(tmp_path / "c.pt", _tensor_pickle(12, 1, (2, 3), (1, 4)), {"0": storage.tobytes()})
    np.testing.assert_array_equal(load_state(str(tmp_path / "c.pt"))["t"], [[1, 5, 9], [2, 6, 10]])


def test_runs_where_torch_is_absent(tmp_path):
    storage = np.arange(4, dtype=np.float32)
    _write_torch_zip(tmp_path / "c.pt", _tensor_pickle(4, 0, (2, 2), (2, 1)), {"0": storage.tobytes()})
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from mer_jax.torch_checkpoint import load_state\n"
        f"print(load_state({str(tmp_path / 'c.pt')!r})['t'].tolist())"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[[0.0, 1.0], [2.0, 3.0]]"


def _safetensors_bytes(tensors: dict[str, np.ndarray], dtypes: dict[str, str]) -> bytes:
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, array in tensors.items():
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": dtypes[name],
            "shape": list(array.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_safetensors_handmade(tmp_path):
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "b": np.array([-2, 3], dtype=np.int64)}
    tensors["h"] = np.array([1.5, -0.25], dtype=ml_dtypes.bfloat16)
    (tmp_path / "m.safetensors").write_bytes(_safetensors_bytes(tensors, {"w": "F32", "b": "I64", "h": "BF16"}))

    loaded = load_state(str(tmp_path / "m.safetensors"))

    assert set(loaded) == {"w", "b", "h"}
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
    assert state_dict(loaded) == loaded


def test_safetensors_written_by_the_package(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5).to(torch.int32), "c": torch.randn(2).bfloat16()}
    safetensors_torch.save_file(tensors, str(tmp_path / "p.safetensors"))
    loaded = load_state(str(tmp_path / "p.safetensors"))
    for name, tensor in tensors.items():
        _assert_same(loaded[name], tensor)


class _Exploit:
    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _exploits(marker):
    return {
        "os.system": (_Exploit(os.system, (f"touch {marker}",)), r"`(posix|os)\.system`"),
        "eval": (_Exploit(eval, (f"open({str(marker)!r}, 'w')",)), r"`builtins\.eval`"),
        "Popen": (_Exploit(subprocess.Popen, (["touch", str(marker)],)), r"`subprocess\.Popen`"),
    }


def _replace_data_pkl(path, data_pkl: bytes):
    """Rewrites the torch.save zip at `path` with `data_pkl` in place of its pickle."""
    with zipfile.ZipFile(path) as z:
        records = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in records.items():
            z.writestr(name, data_pkl if name.endswith("/data.pkl") else raw)


@pytest.mark.parametrize("layout", ["torch zip", "zip", "legacy", "plain pickle"])
@pytest.mark.parametrize("exploit", ["os.system", "eval", "Popen"])
def test_code_is_refused_before_it_runs(tmp_path, layout, exploit):
    marker = tmp_path / f"pwned_{uuid.uuid4().hex}"
    payload, names = _exploits(marker)[exploit]
    evil = pickle.dumps({"state_dict": {}, "x": payload}, protocol=2)
    path = tmp_path / "evil.pth"
    if layout == "torch zip":
        torch = pytest.importorskip("torch")
        torch.save({"state_dict": {"w": torch.ones(2)}}, path)
        _replace_data_pkl(path, evil)
    elif layout == "zip":
        _write_torch_zip(path, evil, {})
    else:
        path.write_bytes((_LEGACY_HEADER if layout == "legacy" else b"") + evil + pickle.dumps([], protocol=2))

    with pytest.raises(UnsafeCheckpointError, match=names + ".*would run code.*state_dict") as info:
        load_state(str(path))

    assert isinstance(info.value, pickle.UnpicklingError) and str(path) in str(info.value)
    assert not marker.exists()


def test_whole_module_and_build_on_globals_are_refused(tmp_path):
    class ModulePid(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "Net", None, None) if obj == "net" else None

    for name, data_pkl, match in [
        ("module", None, "persistent id of kind 'module' refused"),
        ("build", b"\x80\x02ctorch\nFloatStorage\n}b.", "BUILD on _DType"),
    ]:
        if data_pkl is None:
            buffer = io.BytesIO()
            ModulePid(buffer, protocol=2).dump({"m": "net"})
            data_pkl = buffer.getvalue()
        _write_torch_zip(tmp_path / f"{name}.pt", data_pkl, {})
        with pytest.raises(ValueError, match=match):
            load_state(str(tmp_path / f"{name}.pt"))


def test_tensor_outside_its_storage_is_refused(tmp_path):
    _write_torch_zip(tmp_path / "c.pt", _tensor_pickle(4, 1, (2, 2), (2, 1)), {"0": bytes(16)})
    with pytest.raises(ValueError, match="reaches element 4 of a storage of 4"):
        load_state(str(tmp_path / "c.pt"))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("these are not weights\n")
    with pytest.raises(ValueError, match=r"notes\.txt.*zip.*legacy.*safetensors"):
        load_state(str(tmp_path / "notes.txt"))


def _damaged_files(tmp_path):
    """(name, bytes) of checkpoints cut short or altered, each of which must fail whole."""
    good = tmp_path / "good.pt"
    _write_torch_zip(good, _tensor_pickle(4, 0, (4,), (1,)), {"0": np.arange(4, dtype=np.float32).tobytes()})
    zipped = good.read_bytes()
    flipped = zipped.replace(np.arange(4, dtype=np.float32).tobytes(), np.ones(4, dtype=np.float32).tobytes())
    legacy = _LEGACY_HEADER + _tensor_pickle(4, 0, (4,), (1,)).replace(b"Vcpu\nI4\nt", b"Vcpu\nI4\nNt")
    legacy += pickle.dumps(["0"], protocol=2) + struct.pack("<q", 4) + np.arange(4, dtype=np.float32).tobytes()
    assert load_state(_write(tmp_path / "legacy.pt", legacy))["t"].tolist() == [0, 1, 2, 3]
    safe = _safetensors_bytes({"w": np.ones(4, np.float32)}, {"w": "F32"})
    return {
        "zip cut": zipped[: len(zipped) // 2],
        "zip bytes altered": flipped,
        "legacy cut in the pickle": legacy[: len(_LEGACY_HEADER) + 20],
        "legacy cut in the data": legacy[:-3],
        "safetensors cut": safe[:-1],
    }


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_damaged_files_fail_whole(tmp_path):
    for name, data in _damaged_files(tmp_path).items():
        with pytest.raises(ValueError, match="corrupt|truncated|not a checkpoint"):
            load_state(_write(tmp_path / "damaged.pt", data))


def test_module_docstring_names_the_allow_list():
    for name in ("_rebuild_tensor_v2", "OrderedDict", "argparse.Namespace", "BFloat16Storage", "safetensors"):
        assert name in torch_checkpoint.__doc__
