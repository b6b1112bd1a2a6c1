"""This machine's own arithmetic rate, timed in the same run as a benchmark, so that a figure reads
as a fraction of what the machine can do (shared machines vary from hour to hour).

  python bench/machine_rate.py [--json=PATH]

Times, jitted and compiled beforehand (with mer_jax's CPU compiler options, `cpu_compiler`: the
convolutions through the kernels mer_jax uses), on the default device in float32:
- `conv64_gflops`: a 3x3 'SAME' convolution, 64 -> 64 channels, batch 8 of 64x64 maps (the
  narrow ResNet stages of the CPU configs);
- `conv16_gflops`: the same with 16 channels (the narrowest stages);
- `matmul_gflops`: a 1024 x 1024 x 1024 matrix product.
Each is the best of `repeats` timed calls of its analytic FLOP count (2 per multiply-add).
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mer_jax import cpu_compiler  # noqa: E402


def _best_rate(fn, args, flops: float, repeats: int) -> float:
    """GFLOP/s of the fastest of `repeats` calls of the compiled fn."""
    compiled = cpu_compiler.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def conv_rate(channels: int, repeats: int = 5, batch: int = 8, size: int = 64) -> float:
    """GFLOP/s of a 3x3 'SAME' convolution with `channels` in and out, NHWC, float32."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, size, size, channels)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, channels, channels)), jnp.float32)

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    return _best_rate(conv, (x, w), 2.0 * batch * size * size * 9 * channels * channels, repeats)


def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of an n x n x n float32 matrix product."""
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=(n, n)), jnp.float32) for _ in range(2))
    return _best_rate(jnp.matmul, (a, b), 2.0 * n**3, repeats)


def measure() -> dict:
    """{"conv64_gflops", "conv16_gflops", "matmul_gflops", "device"}: this machine's rates now."""
    return {
        "conv64_gflops": conv_rate(64),
        "conv16_gflops": conv_rate(16),
        "matmul_gflops": matmul_rate(),
        "device": jax.devices()[0].device_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rates = measure()
    print(
        f"{rates['device']}: 3x3 conv 64 ch {rates['conv64_gflops']:.1f} GFLOP/s, 16 ch "
        f"{rates['conv16_gflops']:.1f} GFLOP/s, matmul {rates['matmul_gflops']:.1f} GFLOP/s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rates, f, indent=2)


if __name__ == "__main__":
    main()
