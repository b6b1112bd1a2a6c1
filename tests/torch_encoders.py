"""PyTorch encoders laid out and saved as CRW, VFS, STT, MAST and MER-code save theirs, with random
weights: the references `tests/test_convert.py` converts and compares against.

Written from each project's description (mer_jax/convert_arches.py, docs/convert.md), not copied:
torchvision's ResNet names (`conv1`, `bn1`, `layerS.B.convN`, `downsample.0/1`), mmcv's
ConvModule names for STT (`convN.conv`, `convN.bn`, `downsample.conv/bn`), MAST's
(`conv1.0/1`, `left.0/1/3/4`, `shortcut.0/1`) and MER-code's (torchvision's plus unused
squeeze-excitation weights and `pos_embed1`).
"""

import argparse
import collections

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin, cout, kernel, stride, padding, mode="zeros", bias=False):
    return nn.Conv2d(cin, cout, kernel, stride, padding, bias=bias, padding_mode=mode)


class TorchvisionBlock(nn.Module):
    """torchvision's BasicBlock or Bottleneck (stride on the 3x3 conv)."""

    def __init__(self, cin, width, stride, block, mode):
        super().__init__()
        expansion = 1 if block == "basic" else 4
        cout = width * expansion
        self.block = block
        if block == "basic":
            self.conv1 = _conv(cin, width, 3, stride, 1, mode)
            self.conv2 = _conv(width, width, 3, 1, 1, mode)
        else:
            self.conv1 = _conv(cin, width, 1, 1, 0, mode)
            self.conv2 = _conv(width, width, 3, stride, 1, mode)
            self.conv3 = _conv(width, cout, 1, 1, 0, mode)
            self.bn3 = nn.BatchNorm2d(cout)
        self.bn1, self.bn2 = nn.BatchNorm2d(width), nn.BatchNorm2d(width)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, 1, stride, 0, mode), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        if self.block == "basic":
            y = self.bn2(self.conv2(y))
        else:
            y = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(y)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet(nn.Module):
    """A torchvision-layout ResNet with all four stages built (as the checkpoints hold them) and the
    first `len(strides)` of them run, with the given stage strides, stem pool and padding mode."""

    def __init__(self, block, strides, stem_pool, mode="zeros"):
        super().__init__()
        layers = (2, 2, 2, 2) if block == "basic" else (3, 4, 6, 3)
        expansion = 1 if block == "basic" else 4
        self.kept = len(strides)
        self.conv1, self.bn1 = _conv(3, 64, 7, 2, 3, mode), nn.BatchNorm2d(64)
        self.pool = {"max": nn.MaxPool2d(3, 2, 1), "avg": nn.AvgPool2d(3, 2, 1), "none": nn.Identity()}[stem_pool]
        cin = 64
        for stage, blocks in enumerate(layers):
            stride = strides[stage] if stage < len(strides) else 2
            width = 64 * 2**stage
            modules = []
            for index in range(blocks):
                modules.append(TorchvisionBlock(cin, width, stride if index == 0 else 1, block, mode))
                cin = width * expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*modules))

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        for stage in range(self.kept):
            x = getattr(self, f"layer{stage + 1}")(x)
        return x


class MastBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.left = nn.Sequential(
            _conv(cin, cout, 3, stride, 1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            _conv(cout, cout, 3, 1, 1),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride, 0), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.left(x) + self.shortcut(x))


class SqueezeExcitation(nn.Module):
    """Held in MER-code's blocks, never called."""

    def __init__(self, channels, factor=4):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // factor, 1)
        self.fc2 = nn.Conv2d(channels // factor, channels, 1)


class MerBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout)
        self.se = SqueezeExcitation(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, 1, stride, 0), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class StrideFourResNet(nn.Module):
    """MAST's or MER-code's ResNet-18 at output stride 4 (no max-pool; widths 64, 128, 256, 256)."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        if names == "mast":
            self.conv1 = nn.Sequential(_conv(3, 64, 7, 2, 3), nn.BatchNorm2d(64), nn.ReLU())
        else:
            self.conv1, self.bn1 = _conv(3, 64, 7, 2, 3), nn.BatchNorm2d(64)
            self.pos_embed1 = nn.Parameter(torch.zeros(1, 64, 128, 128))
        block = MastBlock if names == "mast" else MerBlock
        cin = 64
        for stage, (width, stride) in enumerate(zip((64, 128, 256, 256), (1, 2, 1, 1))):
            setattr(self, f"layer{stage + 1}", nn.Sequential(block(cin, width, stride), block(width, width, 1)))
            cin = width

    def forward(self, x):
        if self.names == "mast":
            x = self.conv1(x)
        else:
            x = F.relu(self.bn1(self.conv1(x)))
            x = x + F.interpolate(self.pos_embed1, size=x.shape[2:], mode="bilinear")
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class StrideFourModel(nn.Module):
    """MAST's / MER-code's network as saved: feature_extraction + post_convolution (+ MER's colorizer)."""

    def __init__(self, names):
        super().__init__()
        self.feature_extraction = StrideFourResNet(names)
        self.post_convolution = nn.Conv2d(256, 64, 3, 1, 1)
        if names == "mer":
            self.colorizer = nn.Module()
            self.colorizer.gamma = nn.Parameter(torch.ones(1))
            self.colorizer.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.post_convolution(self.feature_extraction(x))


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics (so that a wrongly mapped tensor shows), eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(7)
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith("pos_embed1"):
                tensor.copy_(0.5 * torch.randn(tensor.shape, generator=generator))
            elif tensor.dim() == 4:
                fan_in = tensor.shape[1] * tensor.shape[2] * tensor.shape[3]
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            else:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator) + (name.endswith(".weight")))
    return model.eval()


_MMCV = (  # torchvision names -> mmcv ConvModule names
    (".bn1.", ".conv1.bn."),
    (".bn2.", ".conv2.bn."),
    (".bn3.", ".conv3.bn."),
    (".downsample.0.", ".downsample.conv."),
    (".downsample.1.", ".downsample.bn."),
)


def _mmcv_name(key: str) -> str:
    key = "." + key
    for torchvision, mmcv in _MMCV:
        key = key.replace(torchvision, mmcv)
    key = key.replace(".conv1.weight", ".conv1.conv.weight").replace(".conv2.weight", ".conv2.conv.weight")
    return key.replace(".conv3.weight", ".conv3.conv.weight")[1:]


def save_as_project(model: nn.Module, project: str, path: str) -> None:
    """torch.save of `model`'s weights in the layout `project` writes (CRW, VFS, STT, MAST, MER)."""
    state = model.state_dict()
    if project == "crw":  # model.encoder = From3D(resnet): 'encoder.model.' + a training head and args
        weights = collections.OrderedDict((f"encoder.model.{k}", v) for k, v in state.items())
        weights["selfsim_fc.0.weight"] = torch.zeros(128, 256)
        checkpoint = {"model": weights, "optimizer": {"state": {}}, "epoch": 3, "args": argparse.Namespace(lr=1e-4)}
    elif project == "vfs":  # released: torchvision names under 'state_dict'
        checkpoint = {"state_dict": state, "meta": {}}
    elif project == "stt":  # mmcv: 'backbone.' + ConvModule names, a teacher beside it
        weights = collections.OrderedDict((f"backbone.{_mmcv_name(k)}", v) for k, v in state.items())
        weights["backbone_t.conv1.conv.weight"] = torch.zeros(64, 3, 7, 7)
        checkpoint = {"meta": {"epoch": 1}, "state_dict": weights, "optimizer": {}}
    elif project == "mast":
        checkpoint = {"epoch": 2, "state_dict": state, "optimizer": {}}
    else:  # mer
        checkpoint = {"state_dict": state}
    torch.save(checkpoint, path)


def features(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    """model applied to normalised inputs [B, H, W, 3] -> [B, h, w, C] float32."""
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))))
    return out.numpy().transpose(0, 2, 3, 1)
