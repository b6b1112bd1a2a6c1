"""Label-propagation speed and memory: compile time, steady-state frames/s, end to end.

  python bench/propagation.py [--frames=60] [--height=480] [--width=854] [--presets=mer,crw]
      [--encoders=lab,trained] [--davis_root=PATH --sequence=NAME] [--repo=PATH] [--json=PATH]

Each configuration (preset x encoder) runs in its own process, so its peak memory is its own.
On `--frames` random frames with a two-object first mask (the `trained` encoder is a randomly
initialised paper-size ResNet-18: the cost of a trained one) it times:
- `first_s`: the first whole sequence, which compiles everything; `compile_s`: the time JAX
  reports spent tracing, lowering and compiling (`jax.monitoring` compile events) in that pass;
- steady state: the same sequence again, compiled: features (`features_fps`), propagation with
  the output masks copied to the host (`propagation_fps`) and both (`steady_fps`).
With `--davis_root` (a DAVIS folder) it also times one real sequence end to end (`e2e_fps`): its
JPEGs read, features, propagation and its PNGs written, as `mer_jax.evaluate` does, compiled by
a first pass over the same sequence. Memory is the process's peak RSS and, on a GPU or TPU, the
device's peak bytes in use. `--repo` measures another checkout (e.g. a git worktree of an older
commit) with the same frames; the end-to-end figure needs this one's reading and writing threads.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_encoder(encoder_name: str, config):
    from configs import ytvos
    from mer_jax import export, train_state
    from mer_jax.evaluation import features

    if encoder_name == "lab":
        return features.LabEncoder(config.lab_mean, config.lab_std)
    train_config = ytvos.get_config()
    model, init_fn, _ = train_state.make_initializer(train_config, total_steps=1)
    state = init_fn()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return features.TrainedEncoder(export.ExportedModel(model, variables, train_config), config.feature_batch)


def run_one(args, preset_name: str, encoder_name: str) -> dict:
    import jax
    import numpy as np

    from configs import propagation as propagation_config
    from mer_jax.evaluation import propagation, protocol, vos

    config = propagation_config.benchmark_config("davis")
    encoder = make_encoder(encoder_name, config)
    preset = protocol.make_preset(config.presets[preset_name], encoder_name, config.lab_temperature)
    rng = np.random.default_rng(0)
    height, width = args.height, args.width
    frames = rng.integers(0, 256, size=(args.frames, height, width, 3), dtype=np.uint8)
    first = np.zeros((height, width), np.uint8)
    first[height // 4 : height // 2, width // 4 : width // 2] = 1
    first[height // 2 :, width // 2 :] = 2
    video = vos.Video("random", frames, {0: first}, [1, 2], [f"{t:05d}" for t in range(args.frames)])
    propagator = propagation.Propagator(preset)

    def segment():
        start = time.perf_counter()
        for _ in vos.segment_video(encoder, propagator, video):
            pass
        return time.perf_counter() - start

    compile_events = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compile_events.append(seconds) if event.startswith("/jax/core/compile/") else None
    )
    first_s = segment()
    compile_s = sum(compile_events)
    steady_s = segment()
    start = time.perf_counter()
    jax.block_until_ready(encoder(frames))
    features_s = time.perf_counter() - start
    result = {
        "preset": preset_name, "encoder": encoder_name, "frames": args.frames, "size": f"{height}x{width}",
        "first_s": first_s, "compile_s": compile_s, "steady_fps": args.frames / steady_s,
        "features_fps": args.frames / features_s,
        "propagation_fps": args.frames / max(steady_s - features_s, 1e-9),
    }  # fmt: skip
    if args.davis_root:
        result.update(end_to_end(args, encoder, preset))
    result.update(
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        # The accelerator's own peak where the backend reports it (GPU, TPU); None on a CPU.
        device_peak_gb=(jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**30 or None,
        device=jax.devices()[0].device_kind,
    )
    return result


def end_to_end(args, encoder, preset) -> dict:
    """One DAVIS sequence read, segmented and written as `davis.Evaluator.run` does; timed on a
    second pass (the first compiles)."""
    from mer_jax.evaluation import background, vos
    from mer_jax.evaluation.benchmarks.davis import data as davis_data

    def whole_sequence(output: str) -> tuple[float, int]:
        start = time.perf_counter()
        videos = (davis_data.read_video(args.davis_root, s, args.year) for s in [args.sequence])
        with background.Writer() as writer:
            for video, masks in vos.segment_videos(videos, encoder, preset, desc="sequence"):
                writer.submit(vos.write_masks, os.path.join(output, video.name), video, masks)
        return time.perf_counter() - start, len(masks)

    with tempfile.TemporaryDirectory() as output:
        whole_sequence(output)
        seconds, num_frames = whole_sequence(output)
    return {"sequence": args.sequence, "e2e_frames": num_frames, "e2e_s": seconds, "e2e_fps": num_frames / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames of the steady-state sequence (>= 50)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--presets", default="mer,crw")
    parser.add_argument("--encoders", default="lab,trained")
    parser.add_argument("--davis_root", default=None, help="a DAVIS folder: also time one sequence end to end")
    parser.add_argument("--sequence", default="blackswan", help="the end-to-end sequence")
    parser.add_argument("--year", default="2016", help="the DAVIS edition of --davis_root")
    parser.add_argument("--repo", default=REPO, help="the checkout to measure (default: this one)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "ENCODER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        sys.path.insert(0, os.path.abspath(args.repo))
        print(json.dumps(run_one(args, *args.one)))
        return
    results = []
    for preset in args.presets.split(","):
        for encoder in args.encoders.split(","):
            command = [sys.executable, os.path.abspath(__file__), "--one", preset, encoder] + [
                f"--{name}={getattr(args, name)}"
                for name in ("frames", "height", "width", "davis_root", "sequence", "year", "repo")
                if getattr(args, name) is not None
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=args.repo).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
            print(format_row(results[-1]) if len(results) > 1 else format_table(results), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def format_table(results: list[dict]) -> str:
    header = (f"{'preset':7s} {'encoder':8s} {'size':>9s} {'frames':>6s} {'compile s':>9s} {'steady f/s':>10s} "
              f"{'features f/s':>12s} {'propagation f/s':>15s} {'e2e f/s':>8s} {'RSS GB':>7s} "
              f"{'device GB':>9s}")  # fmt: skip
    return "\n".join([header] + [format_row(r) for r in results])


def format_row(r: dict) -> str:
    e2e = f"{r['e2e_fps']:8.2f}" if "e2e_fps" in r else f"{'-':>8s}"
    device = f"{r['device_peak_gb']:9.2f}" if r["device_peak_gb"] else f"{'-':>9s}"
    return (f"{r['preset']:7s} {r['encoder']:8s} {r['size']:>9s} {r['frames']:6d} {r['compile_s']:9.2f} "
            f"{r['steady_fps']:10.3f} {r['features_fps']:12.3f} {r['propagation_fps']:15.3f} {e2e} "
            f"{r['peak_rss_gb']:7.2f} {device}")  # fmt: skip


if __name__ == "__main__":
    main()
