"""ResNet-18 at output stride 4: MER's pixel embedding network (spec section 2).

conv1 7x7/2 + BN + ReLU (no max-pool), four stages of two basic blocks with strides
(1, 2, 1, 1), and a 3x3 head conv to `embed_dim` without normalisation. Stage widths are
configurable so that demos and tests can run narrow versions on a CPU.
"""

from typing import Sequence

import flax.linen as nn
import jax

_STAGE_STRIDES = (1, 2, 1, 1)
OUTPUT_STRIDE = 4  # conv1 (2) x layer2 (2)
_BLOCKS_PER_STAGE = 2
# PyTorch's kaiming_normal_(mode='fan_out', nonlinearity='relu'), as torchvision's ResNet.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
BN_MODES = ("frozen", "batch")


class _Norm(nn.Module):
    """BatchNorm that is either frozen (running averages, learnable affine) or batch-statistics."""

    bn_mode: str
    zero_init: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return nn.BatchNorm(
            use_running_average=self.bn_mode == "frozen" or not train,
            momentum=0.9,
            epsilon=1e-5,
            scale_init=nn.initializers.zeros if self.zero_init else nn.initializers.ones,
        )(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; the last BN's gamma starts at zero."""

    features: int
    stride: int
    bn_mode: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        strides = (self.stride, self.stride)
        y = nn.Conv(self.features, (3, 3), strides, padding=1, use_bias=False, kernel_init=_CONV_INIT)(x)
        y = nn.relu(_Norm(self.bn_mode)(y, train))
        y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, kernel_init=_CONV_INIT)(y)
        y = _Norm(self.bn_mode, zero_init=True)(y, train)
        if x.shape[-1] != self.features or self.stride != 1:
            x = nn.Conv(self.features, (1, 1), strides, use_bias=False, kernel_init=_CONV_INIT)(x)
            x = _Norm(self.bn_mode)(x, train)
        return nn.relu(x + y)


class Encoder(nn.Module):
    """Maps images [B, H, W, 3] to embeddings [B, ceil(H/4), ceil(W/4), embed_dim].

    Attributes:
      embed_dim: output channels.
      stem_width: conv1 channels (64 in ResNet-18).
      stage_widths: channels of the four stages ((64, 128, 256, 256) in the paper).
      bn_mode: 'frozen' (running averages, learnable gamma/beta) or 'batch'.
      pos_embed: add a learnable absolute position embedding after conv1; it is created at the
        initialisation input's resolution and resized bilinearly for other sizes.
    """

    embed_dim: int = 64
    stem_width: int = 64
    stage_widths: Sequence[int] = (64, 128, 256, 256)
    bn_mode: str = "frozen"
    pos_embed: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")
        if len(self.stage_widths) != len(_STAGE_STRIDES):
            raise ValueError(f"stage_widths needs {len(_STAGE_STRIDES)} entries, got {self.stage_widths}")
        x = nn.Conv(self.stem_width, (7, 7), (2, 2), padding=3, use_bias=False, kernel_init=_CONV_INIT)(x)
        x = nn.relu(_Norm(self.bn_mode)(x, train))
        if self.pos_embed:
            if self.has_variable("params", "pos_embedding"):
                table = self.get_variable("params", "pos_embedding")  # any input size after init
            else:
                shape = (x.shape[1], x.shape[2], self.stem_width)
                table = self.param("pos_embedding", nn.initializers.normal(0.02), shape)
            if table.shape[:2] != x.shape[1:3]:
                table = jax.image.resize(table, (*x.shape[1:3], self.stem_width), "bilinear")
            x = x + table.astype(x.dtype)
        for width, stride in zip(self.stage_widths, _STAGE_STRIDES):
            for block in range(_BLOCKS_PER_STAGE):
                x = BasicBlock(width, stride if block == 0 else 1, self.bn_mode)(x, train)
        return nn.Conv(self.embed_dim, (3, 3), padding=1, kernel_init=_CONV_INIT)(x)
