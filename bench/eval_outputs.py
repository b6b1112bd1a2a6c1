"""Every evaluator's output files in a checkout, for showing that a change leaves them byte-identical.

  python bench/eval_outputs.py --data=DATA --out=OUT [--repo=PATH] [--checkpoint=WORKDIR]
  python bench/eval_outputs.py --compare=OUT_OLD,OUT_NEW

The first form builds (once, into DATA) tiny benchmark trees from procedural videos (DAVIS,
JHMDB, YouTube-VOS in the tests' layouts, a TAP-Vid pickle) and a trained checkpoint
(`configs/demo.py:debug`), then runs, in the checkout at `--repo` (default: this one) and through
its command lines only, so any commit can be measured:
  - `python -m mer_jax.evaluate` for davis, jhmdb, tapvid and ytvos, with the trained encoder (plus
    its floors) and with the lab encoder, into OUT/<benchmark>_<encoder>;
  - a `configs/demo.py:debug` training run with its held-out synthetic evaluation at the end, into
    OUT/train_synthetic (the run's eval_results.json is kept; checkpoints and logs are not).
The second form lists every file under either folder whose bytes differ, or that only one holds,
and exits 1 if there is any. TensorBoard event files and checkpoints are left out (their bytes
carry wall-clock times); a zip is compared by its members' names and bytes (not their times), and
each folder's own path is taken out of the JSON files that name it (YouTube-VOS's "zip").
"""

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = {
    "davis": ("configs/davis.py:debug", "davis_root", "DAVIS"),
    "jhmdb": ("configs/jhmdb.py", "jhmdb_root", "JHMDB"),
    "tapvid": ("configs/tapvid.py", "tapvid_path", "tapvid.pkl"),
    "ytvos": ("configs/ytvos_val.py", "ytvos_root", "valid"),
}
IGNORED = ("events.out.tfevents", "checkpoints", "ckpt", ".lock", "config.json")


def build_data(data: str) -> str:
    """The benchmark trees and a trained checkpoint under `data` (kept when already there);
    returns the checkpoint's workdir."""
    sys.path.insert(0, REPO)
    from tests import fake_data

    if not os.path.isdir(os.path.join(data, "DAVIS")):
        fake_data.davis_tree(os.path.join(data, "DAVIS"), num_sequences=2, num_frames=6)
        fake_data.jhmdb_tree(os.path.join(data, "JHMDB"), num_frames=5, num_test_videos=2)
        fake_data.ytvos_tree(os.path.join(data, "valid"), num_frames=5, late_frame=2, num_videos=2)
        subprocess.run(
            [sys.executable, "-m", "data_prep.synthetic_tapvid", f"--output={data}/tapvid.pkl", "--num_videos=2",
             "--num_frames=6", "--size=64", "--num_points=8"],
            cwd=REPO, check=True,
        )  # fmt: skip
    workdir = os.path.join(data, "trained")
    if not os.path.isdir(workdir):
        subprocess.run(
            [sys.executable, "-m", "mer_jax.train", "--config=configs/demo.py:debug", f"--workdir={workdir}"],
            cwd=REPO, check=True,
        )  # fmt: skip
    return workdir


def run_outputs(repo: str, data: str, out: str, checkpoint: str) -> None:
    """Runs every evaluation in the checkout `repo` into `out`."""
    for benchmark, (config, root_field, root) in BENCHMARKS.items():
        for encoder in ("trained", "lab"):
            output = os.path.join(out, f"{benchmark}_{encoder}")
            command = [
                sys.executable, "-m", "mer_jax.evaluate", f"--config={config}", f"--config.{root_field}={data}/{root}",
                f"--config.encoder={encoder}", f"--config.output={output}", "--config.save_overlays=True",
            ]  # fmt: skip
            if encoder == "trained":
                command += [f"--config.checkpoint={checkpoint}"]
            if benchmark == "tapvid":
                command += ["--config.tapvid_size=64"]
            print(" ".join(command[1:]), flush=True)
            subprocess.run(command, cwd=repo, check=True)
    workdir = os.path.join(out, "train_synthetic")
    subprocess.run(
        [sys.executable, "-m", "mer_jax.train", "--config=configs/demo.py:debug", f"--workdir={workdir}",
         "--config.evals.synthetic.at_end=True"],
        cwd=repo, check=True,
    )  # fmt: skip
    for name in os.listdir(workdir):
        if name != "eval_results.json":
            path = os.path.join(workdir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _same(a: str, b: str, old: str, new: str) -> bool:
    """Whether files a (under old) and b (under new) hold the same content."""
    if a.endswith(".zip"):
        with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
            names = za.namelist()
            return names == zb.namelist() and all(za.read(n) == zb.read(n) for n in names)
    if a.endswith(".json"):
        with open(a) as fa, open(b) as fb:
            return fa.read().replace(old, "ROOT") == fb.read().replace(new, "ROOT")
    return filecmp.cmp(a, b, shallow=False)


def differences(old: str, new: str) -> list[str]:
    """The relative paths whose content differs between the two folders, or that only one holds."""
    old, new = os.path.abspath(old), os.path.abspath(new)
    found = []

    def walk(compared: filecmp.dircmp, prefix: str) -> None:
        for name in compared.left_only + compared.right_only:
            found.append(os.path.join(prefix, name) + " (in one folder only)")
        for name in compared.common_files:
            a, b = os.path.join(compared.left, name), os.path.join(compared.right, name)
            if not _same(a, b, old, new):
                found.append(os.path.join(prefix, name))
        for name, sub in compared.subdirs.items():
            walk(sub, os.path.join(prefix, name))

    walk(filecmp.dircmp(old, new, ignore=[]), "")
    return [path for path in found if not any(part in path for part in IGNORED)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder for the benchmark trees and the trained checkpoint")
    parser.add_argument("--out", default=None, help="folder for the outputs (new or empty)")
    parser.add_argument("--repo", default=REPO, help="the checkout to run (default: this one)")
    parser.add_argument("--compare", default=None, help="OLD,NEW: list the files whose bytes differ")
    args = parser.parse_args()
    if args.compare:
        old, new = args.compare.split(",")
        found = differences(old, new)
        files = sum(len(files) for _, _, files in os.walk(old))
        print(f"{len(found)} of {files} files differ" + "".join(f"\n  {path}" for path in found))
        sys.exit(1 if found else 0)
    if not (args.data and args.out):
        parser.error("give --data and --out (or --compare)")
    checkpoint = build_data(os.path.abspath(args.data))
    run_outputs(os.path.abspath(args.repo), os.path.abspath(args.data), os.path.abspath(args.out), checkpoint)


if __name__ == "__main__":
    main()
