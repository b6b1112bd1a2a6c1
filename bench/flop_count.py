"""Analytic FLOPs of the convolutions and matrix products in a traced function, on any backend.

XLA's `cost_analysis()` leaves out the convolutions that a GPU runs as cuDNN custom calls, so on a
GPU it misses most of the work of a ResNet train step. This module counts, from the jaxpr instead
(the same on every backend), the two primitives that hold nearly all of a network's arithmetic:

- `conv_general_dilated`: 2 FLOPs per multiply-add that touches a real input element, as XLA's
  HloCostAnalysis counts them: 2 * out_batch * out_features * rhs_in_features * prod over spatial
  dims d of (valid (output, kernel) position pairs in d). rhs_in_features is C_in /
  feature_group_count; with batch_group_count (the weight gradient of a grouped conv) out_batch
  is already N / batch_group_count. A pair is valid when its input position is neither padding
  nor a hole of lhs_dilation, so without padding this is the usual 2 * prod(out_shape) *
  prod(kernel_spatial) * C_in / feature_group_count, and the input gradient (lhs-dilated) and the
  weight gradient (rhs-dilated) of any conv each count exactly as many FLOPs as the conv itself:
  the jaxpr of a whole train step counts forward + backward (3x forward).
- `dot_general` (dense layers, einsums): 2 * prod(out_shape) * prod(contracting dims).

Nested jaxprs are walked: jit, custom_jvp/vjp, checkpoint (so a rematerialised forward counts
again, as the device runs it), cond (the costliest branch), scan (the body x its length) and
while_loop (the body once: its trip count is unknown until run time). Elementwise work,
reductions, gathers and the like are left out (XLA's cost analysis counts them where it counts).
"""

import dataclasses
import math
from typing import Callable

import jax
import numpy as np
from jax.extend import core


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """FLOPs of one call, by primitive (summed with +, scaled by a trip count with *)."""

    conv: float
    dot: float

    @property
    def total(self) -> float:
        return self.conv + self.dot

    def __add__(self, other: "FlopCount") -> "FlopCount":
        return FlopCount(self.conv + other.conv, self.dot + other.dot)

    def __mul__(self, factor: float) -> "FlopCount":
        return FlopCount(self.conv * factor, self.dot * factor)


ZERO = FlopCount(0.0, 0.0)


def valid_pairs(in_size: int, out_size: int, kernel_size: int, stride: int, padding_low: int,
                lhs_dilation: int, rhs_dilation: int) -> int:  # fmt: skip
    """(output, kernel) position pairs of one spatial dim whose input position is a real element
    (not padding, not a hole between lhs-dilated elements)."""
    index = np.arange(out_size)[:, None] * stride - padding_low + np.arange(kernel_size)[None, :] * rhs_dilation
    real = (index % lhs_dilation == 0) & (index >= 0) & (index // lhs_dilation < in_size)
    return int(real.sum())


def conv_flops(eqn) -> float:
    """FLOPs of one `conv_general_dilated` equation (see the module docstring)."""
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    out = eqn.outvars[0].aval.shape
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    pairs = 1
    for d, (i, o, k) in enumerate(zip(lhs_spec[2:], out_spec[2:], rhs_spec[2:])):
        pairs *= valid_pairs(lhs[i], out[o], rhs[k], p["window_strides"][d], p["padding"][d][0],
                             p["lhs_dilation"][d], p["rhs_dilation"][d])  # fmt: skip
    return 2.0 * out[out_spec[0]] * out[out_spec[1]] * rhs[rhs_spec[1]] * pairs


def dot_flops(eqn) -> float:
    """FLOPs of one `dot_general` equation: 2 * prod(out_shape) * prod(contracting dims)."""
    lhs = eqn.invars[0].aval.shape
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contracting)


def jaxpr_flops(jaxpr: core.Jaxpr) -> FlopCount:
    """The conv and dot FLOPs of a jaxpr, nested jaxprs included (see the module docstring)."""
    count = ZERO
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            count += FlopCount(conv_flops(eqn), 0.0)
        elif name == "dot_general":
            count += FlopCount(0.0, dot_flops(eqn))
        elif name == "cond":
            count += max((jaxpr_flops(branch.jaxpr) for branch in eqn.params["branches"]), key=lambda c: c.total)
        elif name == "scan":
            count += jaxpr_flops(eqn.params["jaxpr"].jaxpr) * eqn.params["length"]
        else:
            for inner in core.jaxprs_in_params(eqn.params):
                count += jaxpr_flops(inner)
    return count


def count_flops(fn: Callable, *args) -> FlopCount:
    """The conv and dot FLOPs of one call `fn(*args)` (traced, not run; global shapes under jit)."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)
