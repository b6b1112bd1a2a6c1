"""Rows of different sweeps compared object by object, as a sweep compares its own rows.

  python bench/paired_rows.py --rows=NAME=SWEEP_DIR/ROW[,NAME=SWEEP_DIR/ROW...] --baseline=NAME [--json=OUT.json]

Each row is the finished runs `SWEEP_DIR/ROW/seed_<k>/sweep_run.json` of a `mer_jax.sweep` (seeds
0, 1, ... as far as all rows have them). The rows must have been scored on the same held-out
videos (equal floors). Prints `sweep_report`'s table (J&F mean over seeds with its 95% interval;
paired differences to the baseline row over objects x seeds, seed k with seed k) and its
diagnostics, and writes the summary as JSON. Used for a row whose config differs in more than
the sweep's switches (bench/RESULTS.md, issue 24: the value map before and after).
"""

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_row(folder: str) -> list[dict]:
    """The results of `folder/seed_0`, `seed_1`, ... that hold a finished run, in seed order."""
    results = []
    while os.path.isfile(path := os.path.join(folder, f"seed_{len(results)}", "sweep_run.json")):
        with open(path) as f:
            results.append(json.load(f)["results"])
    if not results:
        raise FileNotFoundError(f"{folder}/seed_0/sweep_run.json is missing: not a finished sweep row")
    return results


def compare(rows: dict[str, str], baseline: str) -> tuple[dict, str]:
    """(sweep_report.summarise of the rows {name: folder} over the seeds all of them have, its table)."""
    from mer_jax import sweep_report

    runs = {name: read_row(folder) for name, folder in rows.items()}
    seeds = min(len(results) for results in runs.values())
    runs = {name: results[:seeds] for name, results in runs.items()}
    floors = {name: scores["J&F-Mean"] for name, scores in runs[baseline][0]["floors"].items()}
    for name, results in runs.items():
        if {f: s["J&F-Mean"] for f, s in results[0]["floors"].items()} != floors:
            raise ValueError(f"row {name!r} was scored on other held-out videos than {baseline!r}")
    summary = sweep_report.summarise(runs, baseline)
    lines = [sweep_report.format_table(summary, floors, baseline), "", "diagnostics (mean over seeds: per seed)"]
    for name, entry in summary.items():
        for key, value in entry["diagnostics"].items():
            seeds_text = ", ".join(f"{v:.3f}" for v in value["per_seed"])
            lines.append(f"{name:24s} {key:32s} {value['mean']:.3f}: {seeds_text}")
    return summary, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", required=True, help="NAME=SWEEP_DIR/ROW, comma-separated")
    parser.add_argument("--baseline", required=True, help="the NAME the others are paired with")
    parser.add_argument("--json", default=None, help="where to write the summary")
    args = parser.parse_args()
    rows = dict(item.split("=", 1) for item in args.rows.split(","))
    if args.baseline not in rows:
        parser.error(f"--baseline {args.baseline!r} is not among --rows {sorted(rows)}")
    summary, table = compare(rows, args.baseline)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
