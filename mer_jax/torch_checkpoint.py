"""PyTorch checkpoints read as data, never as code, and without importing torch.

`load_state(path)` returns a checkpoint's top-level object with every tensor (and bare storage)
as a NumPy array, containers kept; `state_dict(obj, key)` picks the parameters' dict out of it.
Formats, told apart by their first bytes:

1. zip (`torch.save`, torch >= 1.6): `<name>/data.pkl` + `<name>/data/<key>` raw storages, in
   the byte order in `<name>/byteorder` (little when absent);
2. legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): pickled magic number
   0x1950a86a20f9469cfc6c, protocol version 1001, sys_info, the main pickle, the list of storage
   keys, then each storage as an int64 little-endian element count and its raw bytes;
3. safetensors: u64 little-endian header length, JSON header `{name: {dtype, shape,
   data_offsets}}` (+ `__metadata__`, dropped), raw data; read as a flat `{name: array}`.
Torch's tar format (torch < 0.4) and TorchScript archives are refused with a ValueError.

Pickles go through `RestrictedUnpickler`, whose allow-list maps each global to a stand-in defined
here (torch, argparse and numpy's pickle helpers are never imported or called):
`torch._utils._rebuild_tensor`, `_rebuild_tensor_v2`, `_rebuild_tensor_v3`, `_rebuild_parameter`,
`_rebuild_parameter_with_state` (parameter state dropped); FloatStorage, DoubleStorage,
HalfStorage, BFloat16Storage, LongStorage, IntStorage, ShortStorage, CharStorage, ByteStorage,
BoolStorage, ComplexFloatStorage, ComplexDoubleStorage (in `torch` or `torch.cuda`) and
`torch[.storage].UntypedStorage`; torch dtypes (`torch.float32`, `torch.uint16`, ...);
`collections.OrderedDict` and `collections.Counter`; `argparse.Namespace` as a SimpleNamespace;
numpy scalars and arrays of non-object dtypes rebuilt from their bytes
(`numpy[._core|.core].multiarray.scalar` / `_reconstruct`, `numpy.ndarray`, `numpy.dtype`);
`_codecs.encode` for latin-1 only (protocol 2's bytes). Any other global raises
`UnsafeCheckpointError`; persistent ids other than 'storage' are refused. Every tensor's offset,
sizes and strides are checked against its storage before it is read.
"""

import _compat_pickle
import collections
import io
import json
import pickle
import re
import struct
import sys
import types
import zipfile

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_FORMATS = "torch.save zip (torch >= 1.6), torch legacy pickle (torch < 1.6) or safetensors"

_TORCH_DTYPES = {  # torch's dtype names (what `torch.float32` pickles as) -> numpy dtypes
    n: np.dtype(getattr(ml_dtypes, n) if n.startswith(("bfloat", "float8")) else n)
    for n in "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 complex64 "
    "complex128 bfloat16 float8_e4m3fn float8_e5m2 float8_e4m3fnuz float8_e5m2fnuz".split()
}
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}  # fmt: skip
_SAFETENSORS_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32",
    "I32": "int32", "U64": "uint64", "I64": "int64", "F16": "float16", "BF16": "bfloat16", "F32": "float32",
    "F64": "float64", "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}  # fmt: skip


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint's pickle names a callable or class outside the allow-list (see the module doc)."""


class _Frozen:
    """Base of the stand-ins: a pickle's BUILD opcode on them is refused rather than obeyed."""

    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"BUILD on {type(self).__name__} is not part of a checkpoint")


class _DType(_Frozen):
    """A torch dtype global (`torch.float32`) or storage class (`torch.FloatStorage`): its dtype."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _Call(_Frozen):
    """An allowed callable; a fresh one per lookup, so that a pickle can change nothing shared."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


class _Storage(_Frozen):
    """A storage of `numel` elements of `dtype`; `data` is filled in once its bytes are read, or
    it is a view of `numel` elements of `root` from element `offset` (legacy storage views)."""

    __slots__ = ("dtype", "numel", "data", "root", "offset")

    def __init__(self, dtype: np.dtype, numel: int, root: "_Storage | None" = None, offset: int = 0):
        self.dtype, self.numel, self.data, self.root, self.offset = dtype, numel, None, root, offset

    def array(self) -> np.ndarray:
        """The storage's elements, `[numel]`, not to be written to."""
        if self.root is None:
            if self.data is None:
                raise ValueError("a storage's data is missing from the file")
            return self.data
        whole = self.root.array()
        if not 0 <= self.offset <= self.offset + self.numel <= whole.size:
            raise ValueError("a storage view lies outside its storage")
        return whole[self.offset : self.offset + self.numel]


class _Tensor(_Frozen):
    """A tensor to be read from `storage` once the storages' bytes are in."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage, offset, size, stride, dtype=None):
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("a tensor's storage is not a storage")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype = storage.dtype if dtype is None else dtype.dtype

    def array(self) -> np.ndarray:
        """The tensor as a contiguous array, `size`-shaped; offset, sizes and strides in elements."""
        flat = self.storage.array()
        if flat.dtype != self.dtype:  # _rebuild_tensor_v3: an untyped (byte) storage of any dtype
            if flat.nbytes % self.dtype.itemsize:
                raise ValueError(f"a {flat.nbytes}-byte storage does not hold whole {self.dtype} elements")
            flat = flat.view(self.dtype)
        numbers = [self.offset, *self.size, *self.stride]
        if not all(type(n) is int and n >= 0 for n in numbers) or len(self.size) != len(self.stride):
            raise ValueError(f"bad tensor geometry: offset {self.offset}, size {self.size}, stride {self.stride}")
        if 0 in self.size:
            return np.zeros(self.size, self.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= flat.size:
            raise ValueError(f"a tensor reaches element {last} of a storage of {flat.size}")
        strides = [s * self.dtype.itemsize for s in self.stride]
        view = np.lib.stride_tricks.as_strided(flat[self.offset :], self.size, strides, writeable=False)
        return np.array(view, copy=True, order="C")


class _NumpyArray(_Frozen):
    """An ndarray being unpickled: `_reconstruct` makes it, BUILD (`__setstate__`) fills it."""

    __slots__ = ("value",)

    def __setstate__(self, state):
        _, shape, dtype, fortran, raw = state
        _check_numpy_dtype(dtype)
        if not isinstance(raw, bytes) or len(raw) != int(np.prod(shape)) * dtype.itemsize:
            raise pickle.UnpicklingError("a numpy array's bytes do not match its shape and dtype")
        self.value = np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C").copy()


def _check_numpy_dtype(dtype):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy values of dtype {dtype!r} are not read (only non-object dtypes)")


def _numpy_dtype(spec, align=False, copy=True):
    if not isinstance(spec, str) or not re.fullmatch(r"[<>|=]?[?biufcSUmM]\d*", spec):
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not read (only plain numeric/string dtypes)")
    return np.dtype(spec, copy=True)  # a fresh dtype, so BUILD cannot alter numpy's own


def _numpy_scalar(dtype, raw):
    _check_numpy_dtype(dtype)
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar's bytes do not match its dtype")
    return np.frombuffer(raw, dtype)[0]


def _numpy_reconstruct(cls, shape, typecode):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy.ndarray objects are read")
    return _NumpyArray()


def _latin1(text, encoding):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is read only as protocol 2's latin-1 bytes")
    return text.encode("latin1")


_CALLS = {
    ("torch._utils", "_rebuild_tensor"): lambda st, off, size, stride: _Tensor(st, off, size, stride),
    ("torch._utils", "_rebuild_tensor_v2"): lambda st, off, size, stride, *_: _Tensor(st, off, size, stride),
    ("torch._utils", "_rebuild_tensor_v3"): lambda st, off, size, stride, rg, h, dt, *_: _Tensor(
        st, off, size, stride, dt
    ),
    ("torch._utils", "_rebuild_parameter"): lambda data, *_: data,
    ("torch._utils", "_rebuild_parameter_with_state"): lambda data, *_: data,
    ("_codecs", "encode"): _latin1,
    **{(m + ".multiarray", "scalar"): _numpy_scalar for m in ("numpy.core", "numpy._core")},
    **{(m + ".multiarray", "_reconstruct"): _numpy_reconstruct for m in ("numpy.core", "numpy._core")},
    ("numpy", "dtype"): _numpy_dtype,
    ("collections", "Counter"): collections.Counter,  # a Python class: called, never handed out
}
_TYPES = {  # classes implemented in C: immutable, and harmless to build
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): types.SimpleNamespace,
    ("numpy", "ndarray"): np.ndarray,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler of the allow-list in the module doc; `persistent_load(pid)` is the caller's."""

    def __init__(self, file, path: str, persistent_load=None):
        super().__init__(file)
        self._path, self._persistent = path, persistent_load

    def find_class(self, module: str, name: str):
        # Protocol 2 writes Python 2 names (`__builtin__.eval`); read them as Python 3's, as pickle does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _TYPES:
            return _TYPES[(module, name)]
        if (module, name) in _CALLS:
            return _Call(_CALLS[(module, name)])
        if module in ("torch", "torch.cuda", "torch.storage") and name in _STORAGE_DTYPES:
            return _DType(_TORCH_DTYPES[_STORAGE_DTYPES[name]])
        if module == "torch" and name in _TORCH_DTYPES:
            return _DType(_TORCH_DTYPES[name])
        raise UnsafeCheckpointError(
            f"{self._path}: refused: its pickle calls `{module}.{name}`, which is not a tensor, storage or plain "
            "container on this reader's allow-list, so loading the file would run code. Re-save only the state "
            "dict with torch in a trusted environment (torch.save(model.state_dict(), path)) or convert it to "
            "safetensors, and load that file instead."
        )

    def persistent_load(self, pid):
        if self._persistent is None:
            raise pickle.UnpicklingError("a persistent id where none is expected")
        kind = pid[0] if isinstance(pid, tuple) and pid else pid
        kind = kind.decode("ascii", "replace") if isinstance(kind, bytes) else kind  # torch < 1.0 wrote bytes
        if kind != "storage" or len(pid) < 2 or not isinstance(pid[1], _DType):
            raise pickle.UnpicklingError(
                f"persistent id of kind {kind!r} refused: only tensor storages are read (a whole pickled "
                "nn.Module is code; save its state_dict instead)"
            )
        return self._persistent(*pid[1:])


def _resolve(obj, memo: dict):
    """`obj` with every stand-in replaced by its value; containers are updated in place. `memo`
    maps id(original) -> (original, value): keeping the original alive keeps its id unique."""
    if id(obj) in memo:
        return memo[id(obj)][1]
    if isinstance(obj, (_Tensor, _Storage)):
        memo[id(obj)] = obj, obj.array() if isinstance(obj, _Tensor) else obj.array().copy()
    elif isinstance(obj, (_DType, _NumpyArray)):
        memo[id(obj)] = obj, obj.dtype if isinstance(obj, _DType) else obj.value
    elif isinstance(obj, (dict, list, types.SimpleNamespace)):
        memo[id(obj)] = obj, obj
        items = vars(obj) if isinstance(obj, types.SimpleNamespace) else obj
        for k, v in list(items.items() if isinstance(items, dict) else enumerate(items)):
            items[k] = _resolve(v, memo)
    elif isinstance(obj, tuple):
        memo[id(obj)] = obj, tuple(_resolve(v, memo) for v in obj)
    else:
        return obj
    return memo[id(obj)][1]


def _from_bytes(raw: bytes, dtype: np.dtype, big: bool) -> np.ndarray:
    """`raw` as a flat array of native-order `dtype`, from big- or little-endian bytes."""
    flat = np.frombuffer(raw, dtype)
    return flat.byteswap() if big != (sys.byteorder == "big") and dtype.itemsize > 1 else flat


def _load_zip(path: str):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"a zip archive with {len(pickles)} '<name>/data.pkl' records, not a torch.save file")
        prefix = pickles[0][: -len("data.pkl")]
        if any(n.startswith(prefix + "code/") for n in names):
            raise ValueError("a TorchScript archive (torch.jit.save), which holds code; save a state_dict instead")
        big = prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() == b"big"
        storages: dict[str, _Storage] = {}

        def storage(kind: _DType, key, location, numel, *view):
            if view or not isinstance(key, str) or not isinstance(numel, int):
                raise pickle.UnpicklingError(f"bad storage id {key!r}")
            if storages.setdefault(key, _Storage(kind.dtype, numel)).dtype != kind.dtype:
                raise pickle.UnpicklingError(f"storage {key} is read as two dtypes")
            return storages[key]

        obj = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path, storage).load()
        for key, st in storages.items():
            info = archive.getinfo(f"{prefix}data/{key}")  # KeyError when the record is missing
            if info.file_size != st.numel * st.dtype.itemsize:
                raise ValueError(f"storage {key} has {info.file_size} bytes, not {st.numel * st.dtype.itemsize}")
            st.data = _from_bytes(archive.read(info), st.dtype, big)  # read() checks the CRC
    return obj


def _is_legacy(path: str) -> bool:
    with open(path, "rb") as f:
        if f.read(1) != b"\x80":
            return False
        f.seek(0)
        try:
            return RestrictedUnpickler(f, path).load() == _LEGACY_MAGIC
        except UnsafeCheckpointError:
            raise
        except Exception:
            return False


def _load_legacy(path: str):
    with open(path, "rb") as f:
        header = [RestrictedUnpickler(f, path).load() for _ in range(3)]
        if header[:2] != [_LEGACY_MAGIC, _LEGACY_PROTOCOL] or not isinstance(header[2], dict):
            raise ValueError(f"legacy header {header[1:]!r} is not protocol {_LEGACY_PROTOCOL}")
        storages: dict[str, _Storage] = {}

        def storage(kind: _DType, key, location, numel, view):
            if storages.setdefault(key, _Storage(kind.dtype, numel)).dtype != kind.dtype:
                raise pickle.UnpicklingError(f"storage {key} is read as two dtypes")
            if view is None:
                return storages[key]
            view_key, offset, view_numel = view
            return _Storage(kind.dtype, view_numel, root=storages[key], offset=offset)

        obj = RestrictedUnpickler(f, path, storage).load()
        keys = RestrictedUnpickler(f, path).load()
        if not isinstance(keys, list) or set(keys) != set(storages):
            raise ValueError("the list of storage keys does not match the storages the pickle uses")
        for key in keys:
            st = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            raw = f.read(st.numel * st.dtype.itemsize) if count == st.numel else b""
            if count != st.numel or len(raw) != count * st.dtype.itemsize:
                raise ValueError(f"storage {key}: {len(raw)} bytes for {count} of {st.numel} elements (truncated?)")
            st.data = _from_bytes(raw, st.dtype, big=False)
    return obj


def _is_safetensors(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
        size = f.seek(0, io.SEEK_END)
    return len(head) == 9 and 2 <= struct.unpack("<Q", head[:8])[0] <= size - 8 and head[8:] == b"{"


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, entry in header.items():
        dtype = _TORCH_DTYPES[_SAFETENSORS_DTYPES[entry["dtype"]]]
        shape, (begin, end) = tuple(entry["shape"]), entry["data_offsets"]
        if not 0 <= begin <= end <= len(data) or end - begin != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"tensor {name!r}: bytes [{begin}, {end}) of {len(data)} do not fit shape {shape}")
        out[name] = _from_bytes(data[begin:end], dtype, big=False).reshape(shape).copy()
    return out


def load_state(path: str) -> dict:
    """The checkpoint at `path` as data: its top-level object (a dict, usually) with every tensor
    turned into a NumPy array of the tensor's dtype and shape (bfloat16 as `ml_dtypes.bfloat16`),
    dicts/lists/tuples/OrderedDicts kept and `argparse.Namespace` as a `types.SimpleNamespace`.

    Raises:
      UnsafeCheckpointError: the pickle would call something outside the allow-list.
      ValueError: not one of the accepted formats, or corrupt or truncated.
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    if zipfile.is_zipfile(path):
        kind, load = "zip", _load_zip
    elif magic == b"PK\x03\x04":
        raise ValueError(f"{path}: a zip archive without its central directory (truncated or corrupt)")
    elif _is_safetensors(path):
        kind, load = "safetensors", _load_safetensors
    elif _is_legacy(path):
        kind, load = "legacy", _load_legacy
    else:
        raise ValueError(f"{path}: not a checkpoint this reader accepts ({_FORMATS})")
    try:
        return _resolve(load(path), {})
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # any failure to parse untrusted bytes means a damaged file
        raise ValueError(f"{path}: corrupt or truncated {kind} checkpoint: {type(e).__name__}: {e}") from e


def _arrays(d) -> dict[str, np.ndarray]:
    return {k: v for k, v in d.items() if isinstance(v, np.ndarray)} if isinstance(d, dict) else {}


def state_dict(obj: dict, key: str | None = None) -> dict[str, np.ndarray]:
    """The `{name: array}` parameters' dict inside a loaded checkpoint: `obj[key]` when `key` is
    given, else the first of 'state_dict', 'model', 'net', 'module' holding arrays, else `obj`
    itself when all its values are arrays. Values that are not arrays are dropped."""
    if not isinstance(obj, dict):
        raise ValueError(f"a checkpoint whose top level is a {type(obj).__name__}, not a dict")
    if key is not None:
        if key not in obj:
            raise KeyError(f"no {key!r} in the checkpoint; its top-level keys are {list(obj)}")
        if not _arrays(obj[key]):
            raise ValueError(f"checkpoint[{key!r}] is a {type(obj[key]).__name__} holding no arrays")
        return _arrays(obj[key])
    for name in ("state_dict", "model", "net", "module"):
        if _arrays(obj.get(name)):
            return _arrays(obj[name])
    if obj and len(_arrays(obj)) == len(obj):
        return dict(obj)
    held = {k: type(v).__name__ for k, v in obj.items()}
    raise ValueError(f"no dict of arrays under 'state_dict', 'model', 'net' or 'module'; the top level holds {held}")
