"""Train-step time of baseline and full MER, split into encoder, VEN, sampler and loss.

  python bench/train_step.py [--config=configs/demo.py[+bf16][+remat]] [--steps=10] [--batch_size=N]
      [--memory_only] [--json=PATH]

For each config spec (repeatable; default: the demo config as full MER and as the all-off
baseline) it times the jitted `train_step` (compilation excluded) on random clips, and each part
on its own: 'encoder' (flow fusion + ResNet, forward and backward), 'ven' (forward and backward),
'sampler' (k-means + region growing, forward only: no gradient flows through it) and 'loss' (the
rest of the step: reconstruction, losses, memory bank, optimizer update).

Memory: 'saved' is the activations kept for the backward pass (what remat and bfloat16 change,
independent of the backend); 'peak' is the device's peak bytes in use where the backend reports
it (GPU, TPU), else XLA's compiled footprint of the step (arguments + outputs + temporaries -
donated; XLA's CPU compiler undoes float32 rematerialisation, so use 'saved' there).
`--memory_only` compiles and reports only memory and FLOPs, e.g. for the paper's batch on a CPU.
FLOPs per step ('tflops_per_step') are counted analytically from the step's jaxpr by
bench/flop_count.py: every convolution and matrix product of the forward and backward pass (with
'+remat' the recomputed forward counts again, so MFU becomes hardware FLOP utilisation), not
elementwise work, reductions or gathers (1.8% of XLA's CPU count for the demo baseline, 3.1% for
full MER). XLA's cost analysis is kept as 'xla_tflops_per_step' but not used: on a GPU it leaves
out the convolutions that run as cuDNN custom calls. Achieved TFLOP/s and MFU (over the devices'
dense bfloat16 peak, PEAK_FLOPS; none for CPUs) use the analytic count. Beside them, the machine's
own measured rate in the same run (bench/machine_rate.py: a 3x3 convolution with 64 and 16
channels, a matrix product), and the step's achieved rate as a fraction of the 64-channel
convolution's ('of conv64'); JSON "machine".
Spec suffixes: '+bf16' sets compute_dtype='bfloat16', '+remat' sets remat=True. JSON:
{spec: {"step_s": s, "parts": {"encoder": s, "ven": s, "sampler": s, "loss": s}, "compiled_gb",
"device_peak_gb", "tflops_per_step", "conv_tflops_per_step", "xla_tflops_per_step", "achieved_tflops", "mfu",
...}}.
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
from jax._src.ad_checkpoint import saved_residuals  # noqa: E402  (print_saved_residuals is its public form)
from ml_collections import config_flags  # noqa: E402

from bench import flop_count, machine_rate  # noqa: E402
from mer_jax import cpu_compiler, objective, sharding, train, train_state  # noqa: E402
from mer_jax.models import ven as ven_lib  # noqa: E402

DEFAULT_CONFIGS = ("configs/demo.py", "configs/demo.py:baseline")
SWITCHES = ("use_flow", "use_ven", "use_sampler", "use_weight_map", "use_pos_neg")


MODIFIERS = {"bf16": ("compute_dtype", "bfloat16"), "remat": ("remat", True)}


def load_config(spec: str):
    """A config spec: a config file (with its ':arg'), where the arg 'baseline' turns every MER switch
    off, then optional '+bf16' (config.compute_dtype='bfloat16') and '+remat' (config.remat=True)."""
    spec, *modifiers = spec.split("+")
    baseline = spec.endswith(":baseline")
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    flag_values(["bench", f"--config={spec.removesuffix(':baseline')}"])
    config = flag_values.config
    if baseline:
        for name in SWITCHES:
            config.model[name] = False
    for modifier in modifiers:
        if modifier not in MODIFIERS:
            raise ValueError(f"unknown modifier +{modifier}; known: {sorted(MODIFIERS)}")
        field, value = MODIFIERS[modifier]
        config[field] = value
    return config


# Dense bfloat16 peak FLOP/s per device (vendor figures), for MFU; MFU is left out elsewhere.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "TPU v4": 275e12, "TPU v5e": 197e12}


def peak_flops_per_device(device_kind: str) -> float:
    """The PEAK_FLOPS entry named in device_kind, or 0 when unknown (e.g. CPUs)."""
    return next((peak for name, peak in PEAK_FLOPS.items() if name in device_kind), 0.0)


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


def saved_activations_gb(config, model, state, batch) -> float:
    """GB of activations the loss keeps for its backward pass (JAX's residuals, not counting the
    inputs): what `remat` and `compute_dtype` change, independent of the backend's scheduling."""
    loss_fn = objective.from_config(config, model, total_steps=2)

    def loss(params, batch_stats, bank, batch):
        return loss_fn(params, batch_stats, batch, jax.random.PRNGKey(0), 0, bank)[0]

    residuals = saved_residuals(loss, state.params, state.batch_stats, state.memory_bank, batch)
    kept = [aval for aval, source in residuals if hasattr(aval, "shape") and "argument" not in source]
    return sum(np.prod(a.shape) * a.dtype.itemsize for a in kept) / 2**30


def bench(config, steps: int, memory_only: bool = False) -> dict:
    mesh = sharding.make_mesh()
    model, init_fn, schedule = train_state.make_initializer(config, total_steps=steps + 1)
    replicated = sharding.replicated(mesh)
    state = jax.jit(init_fn, out_shardings=replicated)()
    loss_fn = objective.from_config(config, model, steps + 1)
    step_fn = cpu_compiler.jit(
        lambda s, b: train.train_step(s, b, loss_fn=loss_fn, schedule=schedule),
        in_shardings=(replicated, sharding.batch_sharding(mesh)),
        out_shardings=(replicated, replicated, replicated),
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
    traced = step_fn.trace(state, batch)
    counted = flop_count.jaxpr_flops(traced.jaxpr.jaxpr)
    compiled = traced.lower().compile()
    memory = compiled.memory_analysis()
    footprint = (
        memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
        - memory.alias_size_in_bytes
    )  # fmt: skip
    flops = counted.total
    facts = {"compute_dtype": config.compute_dtype, "remat": config.remat, "batch_size": b, "image_size": size,
             "saved_gb": saved_activations_gb(config, model, state, batch),
             "compiled_gb": footprint / 2**30, "temp_gb": memory.temp_size_in_bytes / 2**30,
             "tflops_per_step": flops / 1e12, "conv_tflops_per_step": counted.conv / 1e12,
             "xla_tflops_per_step": compiled.cost_analysis().get("flops", 0.0) / 1e12, "devices": mesh.devices.size,
             "device_kind": jax.devices()[0].device_kind}  # fmt: skip
    if memory_only:
        return facts
    compile_s, step_s = timed(compiled, state, batch, repeats=steps)
    peak_flops = peak_flops_per_device(jax.devices()[0].device_kind) * mesh.devices.size

    inputs = jnp.asarray(rng.normal(size=(b, num_frames, size, size, 3)), jnp.float32)
    flow = batch.get("flow")
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    def encoder_loss(params, inputs, flow):  # Arguments, not closed-over constants XLA would fold.
        out, _ = model.apply(
            {**variables, "params": params}, inputs, flow, train=True, refine=False, mutable=["batch_stats"]
        )
        return out.features.sum()

    _, encoder_s = timed(cpu_compiler.jit(jax.grad(encoder_loss)), state.params, inputs, flow, repeats=steps)
    features = cpu_compiler.jit(lambda v, x, f: model.apply(v, x, f, refine=False).features)(variables, inputs, flow)
    parts = {"encoder": encoder_s, "ven": 0.0, "sampler": 0.0}
    if config.model.use_ven:
        ven = ven_lib.ValueExtractionNetwork(**model.ven, **model.value_map, dtype=model.dtype)

        def ven_loss(params, target, refs):
            out = ven.apply({"params": params}, target, refs, train=True, rngs={"dropkey": jax.random.PRNGKey(0)})
            return out.features.sum()

        ven_grad = cpu_compiler.jit(jax.grad(ven_loss, argnums=(0, 1, 2)))
        _, parts["ven"] = timed(ven_grad, state.params["ven"], features[:, -1], features[:, :-1], repeats=steps)
    if loss_fn.sampler is not None:  # The objective's own sampler, alone.
        radii = cpu_compiler.jit(lambda f: loss_fn.sampler(f).radius)
        _, parts["sampler"] = timed(radii, features[:, -1], repeats=steps)
    parts["loss"] = max(step_s - sum(parts.values()), 0.0)
    device_stats = jax.devices()[0].memory_stats() or {}
    return {
        **facts,
        "step_s": step_s,
        "parts": parts,
        "clips_per_s": b / step_s,
        "compile_s": compile_s,
        "device_peak_gb": device_stats.get("peak_bytes_in_use", 0) / 2**30 or None,
        "achieved_tflops": flops / step_s / 1e12,
        "mfu": flops / step_s / peak_flops if peak_flops else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", help="config spec, ':baseline' suffix for all switches off")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=0, help="override the configs' batch size (0: keep)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--memory_only", action="store_true", help="compile and report memory and FLOPs only")
    args = parser.parse_args()
    results = {}
    for spec in args.config or DEFAULT_CONFIGS:
        config = load_config(spec)
        if args.batch_size:
            config.batch_size = args.batch_size
        results[spec] = bench(config, args.steps, args.memory_only)
    if args.memory_only:
        print(f"{'config':40s} {'batch':>5s} {'size':>5s} {'saved GB':>9s} {'compiled GB':>12s} {'TFLOP/step':>10s} "
              f"{'XLA TFLOP':>9s}")  # fmt: skip
        for spec, r in results.items():
            print(f"{spec:40s} {r['batch_size']:5d} {r['image_size']:5d} {r['saved_gb']:9.2f} {r['compiled_gb']:12.2f} "
                  f"{r['tflops_per_step']:10.3f} {r['xla_tflops_per_step']:9.3f}")  # fmt: skip
    else:
        machine = machine_rate.measure()  # In the same run: the figures read as a fraction of it.
        for r in results.values():
            r["machine"] = machine
        print(
            f"machine ({machine['device']}): 3x3 conv 64 ch {machine['conv64_gflops']:.1f} GFLOP/s, 16 ch "
            f"{machine['conv16_gflops']:.1f} GFLOP/s, matmul {machine['matmul_gflops']:.1f} GFLOP/s"
        )
        header = ("config", "batch", "size", "step_s", "clips/s", "encoder", "ven", "sampler", "loss", "sampler%",
                  "peak_GB", "GFLOP/s", "of conv64", "MFU")  # fmt: skip
        print(
            "{:40s} {:>5s} {:>5s} {:>8s} {:>8s} {:>8s} {:>8s} {:>8s} {:>8s} {:>8s} {:>8s} {:>8s} {:>9s} {:>6s}".format(
                *header
            )
        )
        for spec, r in results.items():
            p = r["parts"]
            peak = r["device_peak_gb"] or r["compiled_gb"]
            mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] else "   -"
            gflops = 1000 * r["achieved_tflops"]
            print(
                f"{spec:40s} {r['batch_size']:5d} {r['image_size']:5d} {r['step_s']:8.4f} {r['clips_per_s']:8.1f} "
                f"{p['encoder']:8.4f} {p['ven']:8.4f} {p['sampler']:8.4f} {p['loss']:8.4f} "
                f"{100 * p['sampler'] / r['step_s']:7.1f}% {peak:8.2f} {gflops:8.1f} "
                f"{100 * gflops / machine['conv64_gflops']:8.1f}% {mfu:>6s}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
