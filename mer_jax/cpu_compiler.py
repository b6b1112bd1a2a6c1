"""XLA compiler options for the CPU backend: convolutions through XLA's Eigen kernels, not YNNPACK.

jaxlib 0.10's CPU backend sends every convolution, dot and reduction it can to YNNPACK. For this
project's convolutions YNNPACK is the slower path on a 2-core AVX-512 machine: its weight-gradient
convolutions run at ~25 GFLOP/s against ~100 for XLA's own Eigen kernels, its forward and
input-gradient convolutions at about half Eigen's rate (bench/RESULTS.md, issue 22, 'The train
step'). `options()` keeps YNNPACK's dots and reductions (fast) and removes its convolutions.

Jitted functions whose time goes to convolutions (the train step, feature extraction) are built
with `jit`, which passes `options()`. Other backends get none; neither does an XLA without this
option (older jaxlib), nor a process whose XLA_FLAGS already choose YNNPACK's fusions (the user's
choice is kept).
"""

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp

YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# jaxlib 0.10's default YNNPACK fusions less LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
_YNN_FUSIONS_WITHOUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


@functools.cache
def options(backend: str | None = None) -> dict[str, str] | None:
    """Compiler options for `jax.jit(..., compiler_options=...)` on `backend` (None: JAX's default
    backend): YNNPACK without convolutions on a CPU whose XLA knows the option, else None."""
    if (backend or jax.default_backend()) != "cpu" or YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
        return None
    chosen = {YNN_FUSION_OPTION: _YNN_FUSIONS_WITHOUT_CONVOLUTIONS}
    try:  # A jaxlib without the option, or with other enum names, refuses it at compile time.
        jax.jit(lambda x: x + 1, compiler_options=chosen).lower(jnp.zeros(1)).compile()
    except jax.errors.JaxRuntimeError:
        return None
    return chosen


def jit(fun: Callable, **jit_kwargs: Any) -> Callable:
    """`jax.jit(fun, **jit_kwargs)` compiled with `options()` for JAX's default backend."""
    return jax.jit(fun, compiler_options=options(), **jit_kwargs)
