"""ResNet-18 at output stride 4: MER's pixel embedding network (docs/method.md, 'Encoder').

conv1 7x7/2 + BN + ReLU (no max-pool), four stages of two basic blocks with strides
(1, 2, 1, 1), and a 3x3 head conv to `embed_dim` without normalisation. Stage widths are
configurable so that demos and tests can run narrow versions on a CPU.

The encoder takes images, or a `ScaledInput` (images plus a learnable scalar times an offset:
flow fusion's output) whose scalar gets its gradient without the stem's input gradient.
"""

import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_STAGE_STRIDES = (1, 2, 1, 1)
_BLOCKS_PER_STAGE = 2
OUTPUT_STRIDE = 4  # conv1 (2) x layer2 (2)
# PyTorch's kaiming_normal_(mode='fan_out', nonlinearity='relu'), as torchvision's ResNet.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
BN_MODES = ("frozen", "batch")
_STEM_KERNEL, _STEM_STRIDE, _STEM_PADDING = (7, 7), (2, 2), 3


class ScaledInput(NamedTuple):
    """An encoder input `base + scale * offset` ([B, H, W, C] each, `scale` a scalar array).

    The encoder's value is that of `combined()`; the difference is the backward pass. The gradient
    of `scale`, sum(g * dstem/dscale), is sum(g * stem(offset)) by linearity: a forward
    convolution, where `combined()` would need the stem's input gradient, a transposed 7x7 stride-2
    convolution that XLA's CPU backend runs at ~5 GFLOP/s (81 ms of a 0.9 s train step at
    configs/real.py:cpu; bench/RESULTS.md, issue 22, 'The train step'). The input gradient is still
    computed where `base` or `offset` need one (e.g. flow fusion's learnable 'conv' encoding).
    """

    base: jax.Array
    offset: jax.Array
    scale: jax.Array

    def combined(self) -> jax.Array:
        """base + scale * offset, [B, H, W, C]."""
        return self.base + self.scale.astype(self.base.dtype) * self.offset

    def reshape(self, *shape: int) -> "ScaledInput":
        """base and offset reshaped to `shape`."""
        return self._replace(base=self.base.reshape(*shape), offset=self.offset.reshape(*shape))


def _scaled_stem(stem: nn.Conv, x: ScaledInput) -> jax.Array:
    """stem(x.combined()), with the gradient of x.scale from sum(g * stem(x.offset)) (ScaledInput).

    The first term sees the scale as a constant, so its gradient reaches the kernel, `base` and
    `offset` as stem(combined()) would give it; the second term adds exactly zero to the value
    ((scale - stop_gradient(scale)) = 0) and carries the scale's gradient alone.
    """
    frozen = jax.lax.stop_gradient(x.scale)
    out = stem(x._replace(scale=frozen).combined())
    kernel = jax.lax.stop_gradient(stem.variables["params"]["kernel"])
    dtype = out.dtype
    offset_out = jax.lax.conv_general_dilated(
        jax.lax.stop_gradient(x.offset).astype(dtype),
        kernel.astype(dtype),
        _STEM_STRIDE,
        [(_STEM_PADDING, _STEM_PADDING)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return out + (x.scale - frozen).astype(dtype) * offset_out


class _Norm(nn.Module):
    """BatchNorm that is either frozen (running averages, learnable affine) or batch-statistics."""

    bn_mode: str
    zero_init: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        # Statistics are reduced in float32 and kept in float32 whatever `dtype` is.
        return nn.BatchNorm(
            use_running_average=self.bn_mode == "frozen" or not train,
            momentum=0.9,
            epsilon=1e-5,
            scale_init=nn.initializers.zeros if self.zero_init else nn.initializers.ones,
            dtype=self.dtype,
        )(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; the last BN's gamma starts at zero."""

    features: int
    stride: int
    bn_mode: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        strides = (self.stride, self.stride)
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_CONV_INIT, dtype=self.dtype)
        y = conv(self.features, (3, 3), strides, padding=1)(x)
        y = nn.relu(_Norm(self.bn_mode, dtype=self.dtype)(y, train))
        y = conv(self.features, (3, 3), padding=1)(y)
        y = _Norm(self.bn_mode, zero_init=True, dtype=self.dtype)(y, train)
        if x.shape[-1] != self.features or self.stride != 1:
            x = conv(self.features, (1, 1), strides)(x)
            x = _Norm(self.bn_mode, dtype=self.dtype)(x, train)
        return nn.relu(x + y)


class Encoder(nn.Module):
    """Maps images [B, H, W, C] (or a `ScaledInput` of that shape) to embeddings
    [B, ceil(H/4), ceil(W/4), embed_dim].

    Attributes:
      embed_dim: output channels.
      stem_width: conv1 channels (64 in ResNet-18).
      stage_widths: channels of the four stages ((64, 128, 256, 256) in the paper).
      bn_mode: 'frozen' (running averages, learnable gamma/beta) or 'batch'.
      pos_embed: add a learnable absolute position embedding after conv1; it is created at the
        initialisation input's resolution and resized bilinearly for other sizes.
      dtype: computation dtype of the convolutions and normalisations (e.g. bfloat16); parameters
        and BatchNorm statistics stay float32 and the embeddings are returned as float32.
      remat: recompute each residual block's activations in the backward pass instead of storing
        them (less memory, one more forward).
    """

    embed_dim: int = 64
    stem_width: int = 64
    stage_widths: Sequence[int] = (64, 128, 256, 256)
    bn_mode: str = "frozen"
    pos_embed: bool = False
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array | ScaledInput, train: bool = False) -> jax.Array:
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")
        if len(self.stage_widths) != len(_STAGE_STRIDES):
            raise ValueError(f"stage_widths needs {len(_STAGE_STRIDES)} entries, got {self.stage_widths}")
        conv = functools.partial(nn.Conv, kernel_init=_CONV_INIT, dtype=self.dtype)
        stem = conv(self.stem_width, _STEM_KERNEL, _STEM_STRIDE, padding=_STEM_PADDING, use_bias=False)
        x = _scaled_stem(stem, x) if isinstance(x, ScaledInput) else stem(x)
        x = nn.relu(_Norm(self.bn_mode, dtype=self.dtype)(x, train))
        if self.pos_embed:
            if self.has_variable("params", "pos_embedding"):
                table = self.get_variable("params", "pos_embedding")  # any input size after init
            else:
                shape = (x.shape[1], x.shape[2], self.stem_width)
                table = self.param("pos_embedding", nn.initializers.normal(0.02), shape)
            if table.shape[:2] != x.shape[1:3]:
                # As PyTorch's F.interpolate(mode="bilinear"): half-pixel centres, no antialiasing.
                table = jax.image.resize(table, (*x.shape[1:3], self.stem_width), "bilinear", antialias=False)
            x = x + table.astype(x.dtype)
        # `train` (argument 2, counting self) is a Python bool: static under remat. Explicit names
        # keep the parameter tree the same with and without remat.
        block_class = nn.remat(BasicBlock, static_argnums=(2,)) if self.remat else BasicBlock
        blocks = [  # (width, stride) of each block: a stage's stride applies to its first block
            (width, stride if block == 0 else 1)
            for width, stride in zip(self.stage_widths, _STAGE_STRIDES)
            for block in range(_BLOCKS_PER_STAGE)
        ]
        for index, (width, stride) in enumerate(blocks):
            x = block_class(width, stride, self.bn_mode, self.dtype, name=f"BasicBlock_{index}")(x, train)
        return conv(self.embed_dim, (3, 3), padding=1)(x).astype(jnp.float32)
