"""Runs every benchmark, each in its own process, printing their tables, writing their JSON and
recording them in bench/RESULTS.md.

  python bench/run_all.py [--out=bench_results] [--size=auto|small|paper] [--batch_size=N]
      [--davis_root=PATH] [--no-record]

- train step (`train_step.py`): full MER and the all-off baseline with the per-module split;
  at `paper` size also bfloat16 and rematerialised variants, with memory, TFLOP/s and MFU.
- label propagation (`propagation.py`): compile time, steady-state and (with --davis_root, a
  DAVIS-2016 folder) end-to-end frames/s, and peak memory: at 480x854 with both presets and
  encoders (`paper`), or at 240x427 with the lab encoder (`small`).
- VEN attention (`ven_attention.py`): the VEN's parts, both attention kernels, at the paper's
  64x64 grid (batch 32 at `paper`, 1 at `small`).
- input pipeline (`input_pipeline.py`): clips/s of the TFDS reader at 256x256.
`small` (the default on a CPU) times the demo configs; `paper` (the default on a GPU or TPU)
times configs/ytvos.py at its batch of 32 unless --batch_size is given. `OUT/summary.json`
names the machine and versions and gathers every result; unless --no-record, a section with
every table (`results_markdown.py`) is appended to bench/RESULTS.md.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

import results_markdown

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)

TRAIN_STEP_CONFIGS = {
    "small": ["configs/demo.py", "configs/demo.py:baseline"],
    "paper": [
        "configs/ytvos.py",
        "configs/ytvos.py:baseline",
        "configs/ytvos.py+bf16",
        "configs/ytvos.py:baseline+bf16",
        "configs/ytvos.py+remat",
        "configs/ytvos.py+bf16+remat",
    ],
}


# Printed by a child process, so that this one never claims device memory.
PROBE = """
import json, platform, flax, jax, jax.extend, jaxlib, numpy, optax
print(json.dumps({
    "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "devices": jax.device_count(),
    "platform_version": jax.extend.backend.get_backend().platform_version,
    "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                 "optax": optax.__version__, "numpy": numpy.__version__, "python": platform.python_version()},
}))
"""

PROPAGATION_ARGS = {
    "small": ["--frames=50", "--height=240", "--width=427", "--encoders=lab"],
    "paper": ["--frames=60"],
}
VEN_ARGS = {"small": ["--batch=1"], "paper": ["--batch=32"]}


def machine() -> dict:
    """The accelerator, its software versions and the host."""
    output = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True).stdout
    probed = json.loads(output.strip().splitlines()[-1])
    return {**probed, "jax": probed["versions"]["jax"], "host": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "date": datetime.date.today().isoformat()}  # fmt: skip


def run(name: str, arguments: list[str], out: str) -> dict | list:
    """Runs bench/<name>.py with --json=OUT/<name>.json, echoing its table; returns its JSON."""
    path = os.path.join(out, f"{name}.json")
    print(f"\n== {name} ==", flush=True)
    subprocess.run([sys.executable, os.path.join(BENCH, f"{name}.py"), *arguments, f"--json={path}"], check=True,
                   cwd=REPO)  # fmt: skip
    with open(path) as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_results")
    parser.add_argument("--size", choices=("auto", "small", "paper"), default="auto")
    parser.add_argument("--batch_size", type=int, default=0, help="train-step batch (0: the configs')")
    parser.add_argument("--davis_root", default=None, help="a DAVIS-2016 folder: time one sequence end to end")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=True,
                        help="append the tables to bench/RESULTS.md")  # fmt: skip
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    summary = {"machine": machine()}
    size = args.size if args.size != "auto" else ("small" if summary["machine"]["backend"] == "cpu" else "paper")
    summary["size"] = size
    print(f"machine: {summary['machine']}; size: {size}")
    train_args = [f"--config={spec}" for spec in TRAIN_STEP_CONFIGS[size]]
    train_args += [f"--batch_size={args.batch_size}"] if args.batch_size else []
    train_args += ["--steps=3"] if size == "paper" and summary["machine"]["backend"] == "cpu" else []
    summary["train_step"] = run("train_step", train_args, args.out)
    propagation_args = PROPAGATION_ARGS[size] + ([f"--davis_root={args.davis_root}"] if args.davis_root else [])
    summary["propagation"] = run("propagation", propagation_args, args.out)
    summary["ven_attention"] = run("ven_attention", VEN_ARGS[size], args.out)
    summary["input_pipeline"] = run("input_pipeline", [], args.out)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nAll results: {os.path.join(args.out, 'summary.json')}")
    if args.record:
        command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        results_markdown.append(os.path.join(BENCH, "RESULTS.md"), results_markdown.section(summary, command))
        print(f"Recorded in {os.path.join(BENCH, 'RESULTS.md')}")


if __name__ == "__main__":
    main()
