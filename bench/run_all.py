"""Runs every benchmark, each in its own process, printing their tables and writing their JSON.

  python bench/run_all.py [--out=bench_results] [--size=auto|small|paper] [--batch_size=N]

- train step (`train_step.py`): full MER and the all-off baseline with the per-module split;
  at `paper` size also bfloat16 and rematerialised variants, with memory, TFLOP/s and MFU.
- label propagation (`propagation.py`): frames/s and peak memory at 480x854.
- input pipeline (`input_pipeline.py`): clips/s of the TFDS reader at 256x256.
`small` (the default on a CPU) times the demo configs; `paper` (the default on a GPU or TPU)
times configs/ytvos.py at its batch of 32 unless --batch_size is given. `OUT/summary.json`
names the machine and gathers every result; record them in bench/RESULTS.md.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

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


def machine() -> dict:
    """The accelerator (from a child process, so this one never claims device memory) and host."""
    probe = "import jax, json; print(json.dumps([jax.__version__, jax.default_backend(), jax.devices()[0].device_kind, jax.device_count()]))"  # noqa: E501
    output = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    jax_version, backend, kind, count = json.loads(output.strip().splitlines()[-1])
    return {"jax": jax_version, "backend": backend, "device_kind": kind, "devices": count,
            "host": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "date": datetime.date.today().isoformat()}  # fmt: skip


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
    summary["propagation"] = run("propagation", [], args.out)
    summary["input_pipeline"] = run("input_pipeline", [], args.out)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nAll results: {os.path.join(args.out, 'summary.json')}")


if __name__ == "__main__":
    main()
