"""The published encoders `mer_jax.convert` reads, and how their PyTorch keys map onto ours.

Each `Arch` says how the project evaluates its encoder (docs/convert.md cites the project code
each choice comes from):
  - crw: CRW (ajabri/videowalk): torchvision ResNet-18, layer3 at stride 1, layer4 removed,
    reflect padding, max-pool stem; RGB in [0, 1] with ImageNet statistics; output stride 8.
  - vfs_r18, vfs_r50: VFS (xvjiarui/VFS): torchvision ResNet-18/50 up to layer3 at stride 1,
    zero padding; RGB with ImageNet statistics; output stride 8.
  - stt_r18_d8, stt_r50_d8, stt_r18_d4, stt_r50_d4: STT (qianduoduolr/Spa-then-Temp): the same
    ResNets up to layer3 with strides (1, 2, 2) and no stem pool (output stride 8), or all strides
    1 after an average-pool stem (output stride 4); Lab input normalised by (50, 0, 0), (50, 127, 127).
  - mast, mer: MAST (zlai0/MAST) and MER's PyTorch code (ZhouZihan-jf/MER): a ResNet-18 at output
    stride 4 (no max-pool, strides 1, 2, 1, 1, widths 64, 128, 256, 256) and a 3x3 convolution to 64
    channels: our own `models/encoder.py`, with the learned position embedding for mer; Lab input.

A checkpoint's keys are first brought to the names `expected_keys` lists (`canonical_keys`: the
project's prefix stripped, mmcv's `convN.conv`/`convN.bn` names turned into torchvision's), then
matched one to one; keys the evaluated encoder does not use (a dropped layer4, training heads, a
teacher network, BatchNorm counters) are reported as skipped, never loaded silently.
"""

import dataclasses
import re

import numpy as np

from mer_jax.models import torch_resnet

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LAB_MEAN, LAB_STD = (50.0, 0.0, 0.0), (50.0, 127.0, 127.0)


@dataclasses.dataclass(frozen=True)
class Arch:
    """One published encoder.

    Attributes:
      architecture: 'torch_resnet' (`models/torch_resnet.TorchResNet` with `resnet`'s fields) or
        'mer' (our `models/mer.MER`, encoder only).
      colour, mean, std: the input the project normalised (`torch_resnet.normalize_input`).
      prefixes: where the encoder's keys sit in the checkpoint, tried in order ('' = top level).
      resnet: TorchResNet fields (architecture 'torch_resnet').
      pos_embed: the MER encoder's learned position embedding (architecture 'mer').
      mer_names: 'mast' or 'mer' key names (architecture 'mer').
      unused: regular expressions of keys under the prefix that the evaluated encoder does not use.
    """

    architecture: str
    colour: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    prefixes: tuple[str, ...]
    resnet: dict | None = None
    pos_embed: bool = False
    mer_names: str = ""
    unused: tuple[str, ...] = ()

    @property
    def output_stride(self) -> int:
        if self.architecture == "mer":
            return 4
        return torch_resnet.output_stride(self.resnet["strides"], self.resnet["stem_pool"])


def _resnet(block: str, strides: tuple[int, ...], stem_pool: str, padding: str = "zeros") -> dict:
    layers = (2, 2, 2) if block == "basic" else (3, 4, 6)
    return dict(block=block, layers=layers, strides=strides, stem_pool=stem_pool, padding=padding)


_DROPPED = (r"^layer4\.", r"^fc\.")  # stages and heads past layer3
_RGB = dict(colour="rgb", mean=IMAGENET_MEAN, std=IMAGENET_STD)
_LAB = dict(colour="lab", mean=LAB_MEAN, std=LAB_STD)
ARCHES = {
    "crw": Arch("torch_resnet", **_RGB, prefixes=("encoder.model.", ""),
                resnet=_resnet("basic", (1, 2, 1), "max", "reflect"), unused=_DROPPED),
    "vfs_r18": Arch("torch_resnet", **_RGB, prefixes=("backbone.", ""), resnet=_resnet("basic", (1, 2, 1), "max"),
                    unused=_DROPPED),
    "vfs_r50": Arch("torch_resnet", **_RGB, prefixes=("backbone.", ""),
                    resnet=_resnet("bottleneck", (1, 2, 1), "max"), unused=_DROPPED),
    "stt_r18_d8": Arch("torch_resnet", **_LAB, prefixes=("backbone.",), resnet=_resnet("basic", (1, 2, 2), "none"),
                       unused=_DROPPED),
    "stt_r50_d8": Arch("torch_resnet", **_LAB, prefixes=("backbone.",),
                       resnet=_resnet("bottleneck", (1, 2, 2), "none"), unused=_DROPPED),
    "stt_r18_d4": Arch("torch_resnet", **_LAB, prefixes=("backbone.",), resnet=_resnet("basic", (1, 1, 1), "avg"),
                       unused=_DROPPED),
    "stt_r50_d4": Arch("torch_resnet", **_LAB, prefixes=("backbone.",),
                       resnet=_resnet("bottleneck", (1, 1, 1), "avg"), unused=_DROPPED),
    "mast": Arch("mer", **_LAB, prefixes=("",), mer_names="mast"),
    "mer": Arch("mer", **_LAB, prefixes=("",), pos_embed=True, mer_names="mer",
                unused=(r"\.se\.fc[12]\.", r"^colorizer\.")),
}  # fmt: skip

_MMCV_RENAMES = (  # mmcv ConvModule names (VFS/STT training checkpoints) -> torchvision's
    (re.compile(r"(^|\.)conv(\d)\.conv\."), r"\1conv\2."),
    (re.compile(r"(^|\.)conv(\d)\.bn\."), r"\1bn\2."),
    (re.compile(r"\.downsample\.conv\."), ".downsample.0."),
    (re.compile(r"\.downsample\.bn\."), ".downsample.1."),
)
# Our leaf names -> PyTorch's (a convolution's kernel and bias, a BatchNorm's scale, bias and statistics).
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
# Our MER encoder's module names -> MAST's and MER-code's (one BasicBlock_i per block, two per stage).
_MER_MODULES = {
    "mast": {"stem": "conv1.0", "stem_norm": "conv1.1", "Conv_0": "left.0", "_Norm_0": "left.1",
             "Conv_1": "left.3", "_Norm_1": "left.4", "Conv_2": "shortcut.0", "_Norm_2": "shortcut.1"},
    "mer": {"stem": "conv1", "stem_norm": "bn1", "Conv_0": "conv1", "_Norm_0": "bn1", "Conv_1": "conv2",
            "_Norm_1": "bn2", "Conv_2": "downsample.0", "_Norm_2": "downsample.1"},
}  # fmt: skip


def torch_key(arch: Arch, path: tuple[str, ...]) -> str:
    """The canonical PyTorch key of one of our variables (a flattened path such as
    ('params', 'layer1_0', 'conv1', 'Conv_0', 'kernel'))."""
    _, *modules, leaf = path
    if arch.architecture == "torch_resnet":
        names = [m for m in modules if m != "Conv_0"]
        names = [{"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(n, n) for n in names]
        names = [re.sub(r"^(layer\d)_(\d+)$", r"\1.\2", n) for n in names]
        return ".".join([*names, _LEAVES[leaf]])
    table = _MER_MODULES[arch.mer_names]
    modules = [m for m in modules if m not in ("encoder", "BatchNorm_0")]
    if leaf == "pos_embedding":
        return "feature_extraction.pos_embed1"
    if modules == ["Conv_1"]:  # the head after layer4
        return f"post_convolution.{_LEAVES[leaf]}"
    if modules[0].startswith("BasicBlock_"):
        index = int(modules[0].split("_")[1])
        module = f"layer{index // 2 + 1}.{index % 2}.{table[modules[1]]}"
    else:
        module = table["stem" if modules[0] == "Conv_0" else "stem_norm"]
    return f"feature_extraction.{module}.{_LEAVES[leaf]}"


def torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of one of our variables: conv kernels [kh, kw, I, O] -> [O, I, kh, kw],
    the position table [h, w, C] -> [1, C, h, w], vectors as they are."""
    if path[-1] == "kernel":
        return (shape[3], shape[2], shape[0], shape[1])
    if path[-1] == "pos_embedding":
        return (1, shape[2], shape[0], shape[1])
    return tuple(shape)


def from_torch(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    """A PyTorch tensor laid out as our variable at `path` (the inverse of `torch_shape`), float32."""
    value = np.asarray(value, np.float32)
    if path[-1] == "kernel":
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if path[-1] == "pos_embedding":
        return np.ascontiguousarray(value[0].transpose(1, 2, 0))
    return value


def canonical_keys(arch: Arch, state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The checkpoint's encoder tensors under canonical names, and the keys set aside by reason.

    Returns:
      ({canonical key: array}, {"outside the encoder": [...], "not used at evaluation": [...],
      "BatchNorm counters": [...]}) with the original key names in the second.
    """
    prefix = next((p for p in arch.prefixes if p and any(k.startswith(p) for k in state)), "")
    if prefix == "" and "" not in arch.prefixes:
        raise ValueError(
            f"no key starts with {' or '.join(repr(p) for p in arch.prefixes)}: is this checkpoint of another "
            f"architecture? Its first keys: {sorted(state)[:8]}"
        )
    kept, skipped = {}, {"outside the encoder": [], "not used at evaluation": [], "BatchNorm counters": []}
    for key, value in state.items():
        if not key.startswith(prefix):
            skipped["outside the encoder"].append(key)
            continue
        name = key[len(prefix) :]
        if arch.architecture == "torch_resnet":
            for pattern, replacement in _MMCV_RENAMES:
                name = pattern.sub(replacement, name)
            name = re.sub(r"(^|\.)(conv[12])\.1\.weight$", r"\1\2.weight", name)  # CRW's older conv wrapper
        if name.endswith("num_batches_tracked"):
            skipped["BatchNorm counters"].append(key)
        elif any(re.search(pattern, name) for pattern in arch.unused):
            skipped["not used at evaluation"].append(key)
        elif arch.architecture == "mer" and not name.startswith(("feature_extraction.", "post_convolution.")):
            skipped["outside the encoder"].append(key)
        else:
            kept[name] = value
    return kept, skipped
