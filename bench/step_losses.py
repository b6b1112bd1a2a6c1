"""Losses and gradient norms of the first training steps of every Table-4 row, for comparing two
checkouts: a change that should not alter training must give the same numbers up to float rounding.

  python bench/step_losses.py [--config=configs/demo.py] [--steps=20] [--repo=PATH] --json=OUT.json
  python bench/step_losses.py --compare=OLD.json,NEW.json

For each row of the checkout's configs/table4.py (the five MER switch settings) it builds the config's model and
train step in the checkout at `--repo` (default: this one), then runs `--steps` jitted steps from
the config's seed on a fixed stream of random clips (uint8 frames, and normal flow for rows with
flow, from numpy seed 0), recording each step's 'loss' and 'grad_norm'. JSON: {row: {"loss":
[...], "grad_norm": [...]}, "_config": spec}. `--compare` prints, per row, the largest relative
difference over the steps of each quantity (JSON "max_rel_diff") and exits.
"""

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_row(spec: str, switches: dict[str, bool], steps: int) -> dict[str, list[float]]:
    """Per-step 'loss' and 'grad_norm' of `steps` train steps of config `spec` with the row's
    switches ({config.model field: value})."""
    import jax
    from absl import flags
    from ml_collections import config_flags

    from mer_jax import objective, train, train_state

    try:  # The jit this checkout's train.py uses (its CPU compiler options), where it has one.
        from mer_jax.cpu_compiler import jit
    except ImportError:
        jit = jax.jit

    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    flag_values(["step_losses", f"--config={spec}"])
    config = flag_values.config
    for name, value in switches.items():
        config.model[name] = value
    model, init_fn, schedule = train_state.make_initializer(config, total_steps=steps + 1)
    state = jax.jit(init_fn)()
    loss_fn = objective.from_config(config, model, steps + 1)
    step_fn = jit(lambda s, b: train.train_step(s, b, loss_fn=loss_fn, schedule=schedule))
    size, num_frames, batch = config.data.image_size, config.data.num_refs + 1, config.batch_size
    rng = np.random.default_rng(0)
    out = {"loss": [], "grad_norm": []}
    for _ in range(steps):
        clips = {
            "frames": rng.integers(0, 256, (batch, num_frames, size, size, 3), dtype=np.uint8),
            "video_id": np.arange(batch, dtype=np.int32),
        }
        flow = rng.normal(size=(batch, num_frames, size, size, 2)).astype(np.float32)
        if config.model.use_flow:
            clips["flow"] = flow
        state, metrics, _ = step_fn(state, clips)
        values = jax.device_get(metrics.compute())
        out["loss"].append(float(values["loss"]))
        out["grad_norm"].append(float(values["grad_norm"]))
    return out


def compare(old: dict, new: dict) -> dict[str, dict[str, float]]:
    """{row: {quantity: max over steps of |new - old| / |old|}} for the rows both files hold."""
    result = {}
    for row in old:
        if row != "_config" and row in new:
            result[row] = {
                key: float(np.max(np.abs(np.subtract(new[row][key], old[row][key])) / np.abs(old[row][key])))
                for key in ("loss", "grad_norm")
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", default=None, help="comma-separated Table-4 rows (default: all)")
    parser.add_argument("--repo", default=REPO, help="the checkout to run (default: this one)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--compare", default=None, help="OLD.json,NEW.json: print their differences")
    args = parser.parse_args()
    if args.compare:
        old_path, new_path = args.compare.split(",")
        with open(old_path) as f_old, open(new_path) as f_new:
            differences = compare(json.load(f_old), json.load(f_new))
        print(f"{'row':12s} {'loss':>12s} {'grad_norm':>12s}   (largest relative difference over the steps)")
        for row, diff in differences.items():
            print(f"{row:12s} {diff['loss']:12.2e} {diff['grad_norm']:12.2e}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"max_rel_diff": differences}, f, indent=2)
        return
    repo = os.path.abspath(args.repo)
    output = os.path.abspath(args.json) if args.json else None
    sys.path.insert(0, repo)
    os.chdir(repo)  # Config paths are relative to the checkout.
    from configs import table4  # The checkout's rows.

    results = {"_config": args.config}
    table4_rows = getattr(table4, "TABLE4_ROWS", table4.ROWS)  # Checkouts before issue 24 have only the five.
    for row in args.rows.split(",") if args.rows else table4_rows:
        results[row] = run_row(args.config, table4.ROWS[row], args.steps)
        print(row, " ".join(f"{x:.6f}" for x in results[row]["loss"]), flush=True)
    if output:
        with open(output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
