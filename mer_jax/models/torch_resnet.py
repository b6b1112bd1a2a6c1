"""torchvision-layout ResNets as CRW, VFS and STT evaluate them, for converted PyTorch checkpoints.

`TorchResNet` computes what torchvision's `ResNet` (v1.5: a bottleneck's stride on its 3x3 conv)
computes up to the last kept stage, in evaluation mode (BatchNorm with running statistics,
epsilon 1e-5), with the changes those projects make at test time: per-stage strides (layer3 at
stride 1 for an output stride of 8), fewer stages (layer4 dropped), the stem pool (max, average
counting the padding as PyTorch's `AvgPool2d` does by default, or none) and the convolutions'
padding mode (zeros, or reflect as CRW's `padding_mode='reflect'`; pools always pad as PyTorch).
Parameter names follow torchvision's (`layer1_0` for `layer1.0`, `downsample_conv` and
`downsample_bn` for `downsample.0` and `.1`), so `mer_jax.convert` maps keys one to one.

`normalize_input` prepares uint8 RGB frames as the checkpoint's project did: RGB in [0, 1] or
CIE Lab, minus a mean, over a std.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mer_jax import color

BLOCKS = ("basic", "bottleneck")
STEM_POOLS = ("max", "avg", "none")
PADDINGS = ("zeros", "reflect")
COLOURS = ("rgb", "lab")
_EXPANSION = {"basic": 1, "bottleneck": 4}
_BN_EPSILON = 1e-5


def output_stride(strides: Sequence[int], stem_pool: str) -> int:
    """Pixels per output cell: the stem's 2, the pool's 2 unless 'none', times every stage's stride."""
    stride = 2 * (1 if stem_pool == "none" else 2)
    for s in strides:
        stride *= s
    return stride


class _Conv(nn.Module):
    """A bias-free square convolution with PyTorch's padding: `padding` pixels of zeros or reflected ones."""

    features: int
    kernel: int
    stride: int
    padding: int
    mode: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = [(self.padding, self.padding)] * 2
        if self.mode == "reflect" and self.padding > 0:
            x, pad = jnp.pad(x, [(0, 0), *pad, (0, 0)], mode="reflect"), "VALID"
        return nn.Conv(self.features, (self.kernel,) * 2, (self.stride,) * 2, padding=pad, use_bias=False)(x)


def _bn(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, epsilon=_BN_EPSILON, name=name)


class _Block(nn.Module):
    """torchvision's BasicBlock or Bottleneck (stride on the 3x3 conv), in evaluation mode."""

    width: int
    stride: int
    block: str
    padding: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_channels = self.width * _EXPANSION[self.block]
        if self.block == "basic":
            y = nn.relu(_bn("bn1")(_Conv(self.width, 3, self.stride, 1, self.padding, name="conv1")(x)))
            y = _bn("bn2")(_Conv(self.width, 3, 1, 1, self.padding, name="conv2")(y))
        else:
            y = nn.relu(_bn("bn1")(_Conv(self.width, 1, 1, 0, self.padding, name="conv1")(x)))
            y = nn.relu(_bn("bn2")(_Conv(self.width, 3, self.stride, 1, self.padding, name="conv2")(y)))
            y = _bn("bn3")(_Conv(out_channels, 1, 1, 0, self.padding, name="conv3")(y))
        if self.stride != 1 or x.shape[-1] != out_channels:
            x = _bn("downsample_bn")(_Conv(out_channels, 1, self.stride, 0, self.padding, name="downsample_conv")(x))
        return nn.relu(x + y)


class TorchResNet(nn.Module):
    """Normalised frames [B, H, W, 3] -> the last kept stage's features [B, h, w, C].

    h = H / `output_stride(strides, stem_pool)` rounded up at each stride-2 step as PyTorch's
    convolutions and pools round; C = 64 * 2**(stages - 1), times 4 for bottlenecks (256 for a
    three-stage ResNet-18, 1024 for a three-stage ResNet-50).

    Attributes:
      block: 'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50/101).
      layers: blocks per kept stage, e.g. (2, 2, 2) for ResNet-18 up to layer3.
      strides: each kept stage's stride (its first block's), e.g. (1, 2, 1).
      stem_pool: after the 7x7 stride-2 stem: 'max' (3x3, stride 2, padding 1), 'avg' (the same,
        the zero padding counted in every mean) or 'none'.
      padding: the convolutions' padding mode, 'zeros' or 'reflect'.
    """

    block: str
    layers: Sequence[int]
    strides: Sequence[int]
    stem_pool: str
    padding: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.block not in BLOCKS or self.stem_pool not in STEM_POOLS or self.padding not in PADDINGS:
            raise ValueError(
                f"need block in {BLOCKS}, stem_pool in {STEM_POOLS}, padding in {PADDINGS}; "
                f"got {self.block!r}, {self.stem_pool!r}, {self.padding!r}"
            )
        if len(self.layers) != len(self.strides) or not 1 <= len(self.layers) <= 4:
            raise ValueError(
                f"need one stride per kept stage (1 to 4), got layers {self.layers}, strides {self.strides}"
            )
        x = nn.relu(_bn("bn1")(_Conv(64, 7, 2, 3, self.padding, name="conv1")(x)))
        window, pad = (3, 3), ((1, 1), (1, 1))
        if self.stem_pool == "max":
            x = nn.max_pool(x, window, (2, 2), pad)  # pads with -inf, as PyTorch
        elif self.stem_pool == "avg":
            x = nn.avg_pool(x, window, (2, 2), pad, count_include_pad=True)
        for stage, (blocks, stride) in enumerate(zip(self.layers, self.strides)):
            for index in range(blocks):
                name = f"layer{stage + 1}_{index}"
                x = _Block(64 * 2**stage, stride if index == 0 else 1, self.block, self.padding, name=name)(x)
        return x


def normalize_input(frames: jax.Array, colour: str, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """uint8 RGB frames [..., 3] -> float32 (RGB in [0, 1], or CIE Lab) minus `mean`, over `std`."""
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {COLOURS}, got {colour!r}")
    values = jnp.asarray(frames, jnp.float32) / 255.0
    if colour == "lab":
        values = color.rgb_to_lab(values)
    return (values - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
