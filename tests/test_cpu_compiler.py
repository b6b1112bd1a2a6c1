"""CPU compiler options: convolutions leave YNNPACK, results stay those of the default compile."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax import cpu_compiler


def _conv_and_dot(x, w, a):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y, a @ a


def _ynn_fused_ops(compiled_text: str) -> set[str]:
    """The HLO opcodes inside the YNNPACK fusions of a compiled module's text."""
    ops = set()
    for called in re.findall(r"kind=kCustom, calls=%(\S+?),.*?__ynn_fusion", compiled_text):
        body = re.search(r"\n%" + re.escape(called) + r" .*?\n\}", compiled_text, re.S).group(0)
        ops |= set(re.findall(r"= \S+ (\w+)\(", body))
    return ops


def test_convolutions_leave_ynnpack_and_give_the_same_numbers():
    if cpu_compiler.options() is None:
        pytest.skip("this jaxlib has no YNNPACK fusion option (or XLA_FLAGS sets it)")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 24, 24, 64)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 64, 64)), jnp.float32)
    a = jnp.asarray(rng.normal(size=(64, 64)), jnp.float32)
    default = jax.jit(_conv_and_dot).lower(x, w, a).compile()
    chosen = cpu_compiler.jit(_conv_and_dot).lower(x, w, a).compile()
    if "convolution" not in _ynn_fused_ops(default.as_text()):  # jaxlib 0.10 sends it to YNNPACK.
        pytest.skip("this jaxlib does not send this convolution to YNNPACK")
    assert "convolution" not in _ynn_fused_ops(chosen.as_text())
    assert "dot" in _ynn_fused_ops(chosen.as_text())  # Dots keep YNNPACK.
    for got, want in zip(chosen(x, w, a), default(x, w, a)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)


def test_no_options_off_the_cpu_or_over_the_users_xla_flags(monkeypatch):
    assert cpu_compiler.options("gpu") is None
    cpu_compiler.options.cache_clear()
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
    try:
        assert cpu_compiler.options("cpu") is None
    finally:
        cpu_compiler.options.cache_clear()
