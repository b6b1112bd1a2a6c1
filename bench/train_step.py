"""Train-step time of one or more configs: prints a table and writes JSON.

  python bench/train_step.py [--config=configs/demo.py] [--steps=20] [--json=PATH]

Times the jitted `train_step` (compilation excluded) on synthetic clips of the config's shape,
on all local devices. JSON: {config: {"step_s": s, "clips_per_s": c, "compile_s": s, ...}}.
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mer_jax import sharding, train, train_state  # noqa: E402

DEFAULT_CONFIGS = ("configs/demo.py:debug", "configs/demo.py")


def load_config(spec: str):
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    flag_values(["bench", f"--config={spec}"])
    return flag_values.config


def time_train_step(config, steps: int) -> dict:
    mesh = sharding.make_mesh()
    model, init_fn, schedule = train_state.make_initializer(config, total_steps=steps + 1)
    replicated = sharding.replicated(mesh)
    state = jax.jit(init_fn, out_shardings=replicated)()
    step_fn = jax.jit(
        lambda s, b: train.train_step(s, b, loss_fn=train.make_loss_fn(config, model, steps + 1), schedule=schedule),
        in_shardings=(replicated, sharding.batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    size, frames = config.data.image_size, config.data.num_refs + 1
    rng = np.random.default_rng(0)
    batch = {"frames": rng.integers(0, 256, (config.batch_size, frames, size, size, 3), dtype=np.uint8)}
    batch = sharding.global_batch(batch, mesh)
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
    return {
        "step_s": step_s,
        "clips_per_s": config.batch_size / step_s,
        "compile_s": compile_s,
        "batch_size": config.batch_size,
        "image_size": size,
        "devices": mesh.devices.size,
        "device_kind": jax.devices()[0].device_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="config spec (repeatable)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    results = {spec: time_train_step(load_config(spec), args.steps) for spec in args.config or DEFAULT_CONFIGS}
    print(f"{'config':32s} {'batch':>5s} {'size':>5s} {'step_s':>9s} {'clips/s':>9s} {'compile_s':>9s}")
    for spec, r in results.items():
        print(
            f"{spec:32s} {r['batch_size']:5d} {r['image_size']:5d} {r['step_s']:9.4f} "
            f"{r['clips_per_s']:9.1f} {r['compile_s']:9.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
