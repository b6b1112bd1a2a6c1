"""Train-step time of baseline and full MER, split into encoder, VEN, sampler and loss.

  python bench/train_step.py [--config=configs/demo.py] [--steps=10] [--batch_size=N] [--json=PATH]

For each config spec (repeatable; default: the demo config as full MER and as the all-off
baseline) it times the jitted `train_step` (compilation excluded) on random clips, and each part
on its own: 'encoder' (flow fusion + ResNet, forward and backward), 'ven' (forward and backward),
'sampler' (k-means + region growing, forward only: no gradient flows through it) and 'loss' (the
rest of the step: reconstruction, losses, memory bank, optimizer update). JSON:
{spec: {"step_s": s, "parts": {"encoder": s, "ven": s, "sampler": s, "loss": s}, ...}}.
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

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mer_jax import sampler, sharding, train, train_state  # noqa: E402
from mer_jax.models import motion  # noqa: E402

DEFAULT_CONFIGS = ("configs/demo.py", "configs/demo.py:baseline")
SWITCHES = ("use_flow", "use_ven", "use_sampler", "use_weight_map", "use_pos_neg")


def load_config(spec: str):
    """A config spec; the suffix ':baseline' turns every MER switch off."""
    baseline = spec.endswith(":baseline")
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    flag_values(["bench", f"--config={spec.removesuffix(':baseline')}"])
    config = flag_values.config
    if baseline:
        for name in SWITCHES:
            config.model[name] = False
    return config


def timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first call seconds, mean seconds of `repeats` further calls)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return first, (time.perf_counter() - start) / repeats


def bench(config, steps: int) -> dict:
    mesh = sharding.make_mesh()
    model, init_fn, schedule = train_state.make_initializer(config, total_steps=steps + 1)
    replicated = sharding.replicated(mesh)
    state = jax.jit(init_fn, out_shardings=replicated)()
    step_fn = jax.jit(
        lambda s, b: train.train_step(s, b, loss_fn=train.make_loss_fn(config, model, steps + 1), schedule=schedule),
        in_shardings=(replicated, sharding.batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
    )
    size, num_frames, b = config.data.image_size, config.data.num_refs + 1, config.batch_size
    rng = np.random.default_rng(0)
    host_batch = {
        "frames": rng.integers(0, 256, (b, num_frames, size, size, 3), dtype=np.uint8),
        "video_id": np.arange(b, dtype=np.int32),
    }
    if config.model.use_flow:
        host_batch["flow"] = rng.normal(size=(b, num_frames, size, size, 2)).astype(np.float32)
    batch = sharding.global_batch(host_batch, mesh)
    compile_s, step_s = timed(step_fn, state, batch, repeats=steps)

    inputs = jnp.asarray(rng.normal(size=(b, num_frames, size, size, 3)), jnp.float32)
    flow = batch.get("flow")
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    def encoder_loss(params):
        out, _ = model.apply(
            {**variables, "params": params}, inputs, flow, train=True, refine=False, mutable=["batch_stats"]
        )
        return out.features.sum()

    _, encoder_s = timed(jax.jit(jax.grad(encoder_loss)), state.params, repeats=steps)
    features = jax.jit(lambda v, x, f: model.apply(v, x, f, refine=False).features)(variables, inputs, flow)
    parts = {"encoder": encoder_s, "ven": 0.0, "sampler": 0.0}
    if config.model.use_ven:
        ven = motion.ValueExtractionNetwork(**model.ven)

        def ven_loss(params, target, refs):
            out = ven.apply({"params": params}, target, refs, train=True, rngs={"dropkey": jax.random.PRNGKey(0)})
            return out.features.sum()

        ven_grad = jax.jit(jax.grad(ven_loss, argnums=(0, 1, 2)))
        _, parts["ven"] = timed(ven_grad, state.params["ven"], features[:, -1], features[:, :-1], repeats=steps)
    if config.model.use_sampler:
        radii = jax.jit(lambda f: sampler.pixel_radii(f, **config.model.sampler).radius)
        _, parts["sampler"] = timed(radii, features[:, -1], repeats=steps)
    parts["loss"] = max(step_s - sum(parts.values()), 0.0)
    return {
        "step_s": step_s,
        "parts": parts,
        "clips_per_s": b / step_s,
        "compile_s": compile_s,
        "batch_size": b,
        "image_size": size,
        "devices": mesh.devices.size,
        "device_kind": jax.devices()[0].device_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="config spec, ':baseline' suffix for all switches off")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=0, help="override the configs' batch size (0: keep)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    results = {}
    for spec in args.config or DEFAULT_CONFIGS:
        config = load_config(spec)
        if args.batch_size:
            config.batch_size = args.batch_size
        results[spec] = bench(config, args.steps)
    header = ("config", "batch", "size", "step_s", "clips/s", "encoder", "ven", "sampler", "loss", "sampler%")
    print("{:34s} {:>5s} {:>5s} {:>8s} {:>8s} {:>8s} {:>8s} {:>8s} {:>8s} {:>8s}".format(*header))
    for spec, r in results.items():
        p = r["parts"]
        print(
            f"{spec:34s} {r['batch_size']:5d} {r['image_size']:5d} {r['step_s']:8.4f} {r['clips_per_s']:8.1f} "
            f"{p['encoder']:8.4f} {p['ven']:8.4f} {p['sampler']:8.4f} {p['loss']:8.4f} "
            f"{100 * p['sampler'] / r['step_s']:7.1f}%"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
