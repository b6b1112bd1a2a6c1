"""Label-propagation throughput and peak memory at 480p: both presets x both encoders.

  python bench/propagation.py [--frames=12] [--width=854] [--json=PATH]

Each configuration runs in its own process (so peak RSS is its own) on random frames with a
2-object first mask; the 'trained' encoder is a randomly initialised paper-size ResNet-18
(the same cost as a trained one). frames/s covers feature extraction + propagation + output
masks, after a warm-up sequence that compiles everything. Memory is the process's peak RSS and,
on a GPU or TPU, the device's peak bytes in use.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def run_one(preset_name: str, encoder_name: str, num_frames: int, height: int, width: int) -> dict:
    import jax
    import numpy as np

    from configs import propagation as propagation_config
    from configs import ytvos
    from mer_jax import export, train_state
    from mer_jax.evaluation import features, propagation, protocol, vos

    config = propagation_config.benchmark_config("davis")
    if encoder_name == "lab":
        encoder = features.LabEncoder(config.lab_mean, config.lab_std)
    else:
        train_config = ytvos.get_config()
        model, init_fn, _ = train_state.make_initializer(train_config, total_steps=1)
        state = init_fn()
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        encoder = features.TrainedEncoder(export.ExportedModel(model, variables, train_config), config.feature_batch)
    preset = protocol.make_preset(config.presets[preset_name], encoder_name, config.lab_temperature)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(num_frames, height, width, 3), dtype=np.uint8)
    first = np.zeros((height, width), np.uint8)
    first[height // 4 : height // 2, width // 4 : width // 2] = 1
    first[height // 2 :, width // 2 :] = 2
    propagator = propagation.Propagator(preset)

    def segment(clip):
        video = vos.Video("random", clip, {0: first}, [1, 2], [f"{t:05d}" for t in range(len(clip))])
        for _, mask in vos.segment_video(encoder, propagator, video):
            pass
        return mask

    segment(frames[: min(3, num_frames)])  # compile
    start = time.perf_counter()
    segment(frames)
    elapsed = time.perf_counter() - start
    return {
        "preset": preset_name,
        "encoder": encoder_name,
        "frames": num_frames,
        "size": f"{height}x{width}",
        "frames_per_s": num_frames / elapsed,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        # The accelerator's own peak where the backend reports it (GPU, TPU); None on a CPU.
        "device_peak_gb": (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**30 or None,
        "device": jax.devices()[0].device_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--presets", default="mer,crw")
    parser.add_argument("--encoders", default="lab,trained")
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "ENCODER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.frames, args.height, args.width)))
        return
    results = []
    for preset in args.presets.split(","):
        for encoder in args.encoders.split(","):
            command = [sys.executable, __file__, "--one", preset, encoder, f"--frames={args.frames}",
                       f"--height={args.height}", f"--width={args.width}"]  # fmt: skip
            output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
    print(f"{'preset':7s} {'encoder':8s} {'size':>9s} {'frames/s':>9s} {'peak RSS GB':>12s} {'device GB':>10s}")
    for r in results:
        device = f"{r['device_peak_gb']:10.2f}" if r["device_peak_gb"] else f"{'-':>10s}"
        print(
            f"{r['preset']:7s} {r['encoder']:8s} {r['size']:>9s} {r['frames_per_s']:9.3f} {r['peak_rss_gb']:12.2f} "
            f"{device}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
