"""The statistics, table, JSON and chart of a sweep (`sweep.py`): rows x seeds of held-out J&F.

Every row is evaluated on the same held-out videos, so rows are compared object by object: for
each path (`trained`: encoder features; `trained_ven`: VEN-refined queries) a row gets its J&F
mean over seeds with a 95% Student-t interval, and its paired differences to the baseline row
(seed k of a row against seed k of the baseline) and to each floor, over every (object, seed)
pair, with 95% intervals. The floors (copy, lab) are printed and charted beside them (docs/method.md, 'Benchmarks').
"""

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

PATHS = ("trained", "trained_ven")
CONFIDENCE = 0.95


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its Student-t interval at `confidence`.

    low, high = mean -+ t_{(1+confidence)/2, n-1} * s / sqrt(n), with s the sample standard
    deviation (ddof=1); NaN bounds for fewer than two values.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf((1 + confidence) / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return mean, mean - float(half), mean + float(half)


def paired_differences(row: Sequence[Mapping[str, float]], baseline: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Row minus baseline per (seed, object): [pairs] float64.

    Args:
      row, baseline: per seed (the same order), {object key: J&F}; seed k of the row pairs with
        seed k of the baseline, and only objects present in both count.
    """
    if len(row) != len(baseline):
        raise ValueError(f"paired seeds differ: {len(row)} vs {len(baseline)}")
    return np.asarray([r[key] - b[key] for r, b in zip(row, baseline) for key in r if key in b], np.float64)


def _paired(row: Sequence[Mapping[str, float]], other: Sequence[Mapping[str, float]]) -> dict:
    """{"mean", "ci95", "pairs"} of the paired differences row - other (`paired_differences`)."""
    differences = paired_differences(row, other)
    mean, low, high = mean_interval(differences)
    return {"mean": mean, "ci95": [low, high], "pairs": int(differences.size)}


def summarise(runs: Mapping[str, Sequence[Mapping]], baseline: str) -> dict:
    """Per row and path: J&F mean over seeds with its interval, and the paired differences to the
    baseline and to each floor.

    Args:
      runs: {row: [eval_results.json of each seed, in seed order]} (`training_evals.py`, synthetic benchmark);
        an entry may also hold "diagnostics" ({key: float}).
      baseline: the row the others are paired with (its `trained` path).

    Returns:
      {row: {path: {"J&F-Mean", "ci95": [low, high], "per_seed": [...], "vs_baseline": {"mean",
      "ci95", "pairs"}, "vs_floors": {floor: {"mean", "ci95", "pairs"}}}, "diagnostics": {key:
      {"mean", "ci95", "per_seed"}}}}.
    """
    if baseline not in runs:
        raise ValueError(f"the baseline row {baseline!r} is not among the sweep's rows {sorted(runs)}")
    base = [run["trained"]["per_object"] for run in runs[baseline]]
    summary = {}
    for row, results in runs.items():
        entry = {}
        for path in PATHS:
            if not all(path in run for run in results):
                continue
            per_seed = [run[path]["J&F-Mean"] for run in results]
            mean, low, high = mean_interval(per_seed)
            per_object = [run[path]["per_object"] for run in results]
            entry[path] = {
                "J&F-Mean": mean, "ci95": [low, high], "per_seed": per_seed,
                "vs_baseline": _paired(per_object, base),
                "vs_floors": {
                    floor: _paired(per_object, [run["floors"][floor]["per_object"] for run in results])
                    for floor in results[0].get("floors", {})
                },
            }  # fmt: skip
        keys = sorted(set.intersection(*(set(run.get("diagnostics", {})) for run in results)) - {"step"})
        entry["diagnostics"] = {}
        for key in keys:
            per_seed = [run["diagnostics"][key] for run in results]
            mean, low, high = mean_interval(per_seed)
            entry["diagnostics"][key] = {"mean": mean, "ci95": [low, high], "per_seed": per_seed}
        summary[row] = entry
    return summary


def _interval(mean: float, bounds: Sequence[float], signed: bool = False) -> str:
    number = f"{mean:+.4f}" if signed else f"{mean:.4f}"
    if math.isnan(bounds[0]):
        return f"{number} [  n/a ]"
    low, high = (f"{b:+.4f}" if signed else f"{b:.4f}" for b in bounds)
    return f"{number} [{low}, {high}]"


def format_table(summary: Mapping[str, Mapping], floors: Mapping[str, float], baseline: str) -> str:
    """Rows x paths: J&F mean [95% interval over seeds] and the paired differences to the
    baseline and to each floor [95% interval over objects x seeds], then the floors."""
    columns = ["vs " + baseline, *(f"vs {floor} floor" for floor in floors)]
    header = f"{'row':12s} {'path':12s} {'J&F mean [95% CI]':>26s} "
    lines = [header + " ".join(f"{c + ' [95% CI]':>26s}" for c in columns)]
    for row, entry in summary.items():
        for path in PATHS:
            if path in entry:
                scores = entry[path]
                paired = [scores["vs_baseline"], *(scores["vs_floors"][floor] for floor in floors)]
                lines.append(
                    f"{row:12s} {path:12s} {_interval(scores['J&F-Mean'], scores['ci95']):>26s} "
                    + " ".join(f"{_interval(p['mean'], p['ci95'], signed=True):>26s}" for p in paired)
                )
    lines.append(f"(paired differences over objects x seeds: {scores['vs_baseline']['pairs']} pairs per row)")
    for name, value in floors.items():
        lines.append(f"{'floor':12s} {name:12s} {value:26.4f}")
    return "\n".join(lines)


def per_sequence(runs: Mapping[str, Sequence[Mapping]]) -> dict[str, dict[str, float]]:
    """Each sequence's J&F per row (the `trained` path) and floor: {sequence: {row or "<floor>
    floor": mean over seeds and the sequence's objects}}, sequences in the order of the first run.

    Objects are named "<sequence>_<object id>" (`per_object` of the DAVIS and synthetic benchmarks).
    """

    def by_sequence(per_object_of_seeds: Sequence[Mapping[str, float]]) -> dict[str, float]:
        values: dict[str, list[float]] = {}
        for per_object in per_object_of_seeds:
            for key, value in per_object.items():
                values.setdefault(key.rsplit("_", 1)[0], []).append(value)
        return {sequence: float(np.mean(v)) for sequence, v in values.items()}

    columns = {row: by_sequence([run["trained"]["per_object"] for run in results]) for row, results in runs.items()}
    first = next(iter(runs.values()))[0]
    for floor, scores in first.get("floors", {}).items():
        columns[f"{floor} floor"] = by_sequence([scores["per_object"]])
    sequences = next(iter(columns.values()))
    return {sequence: {name: column[sequence] for name, column in columns.items()} for sequence in sequences}


def format_sequences(sequences: Mapping[str, Mapping[str, float]]) -> str:
    """The per-sequence table of `per_sequence`: one line per sequence, one column per row and floor."""
    names = list(next(iter(sequences.values())))
    width = max(12, *(len(name) + 1 for name in names))
    lines = ["J&F per sequence (trained path, mean over seeds and objects):"]
    lines.append(f"{'sequence':20s}" + "".join(f"{name:>{width}s}" for name in names))
    for sequence, values in sequences.items():
        lines.append(f"{sequence:20s}" + "".join(f"{values[name]:{width}.4f}" for name in names))
    return "\n".join(lines)


def write_chart(path: str, summary: Mapping[str, Mapping], floors: Mapping[str, float], title: str) -> None:
    """A bar chart of every row's J&F per path with 95% error bars, and the floors as lines (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows = list(summary)
    figure, axes = pyplot.subplots(figsize=(max(1.6 * len(rows) + 2.5, 6.5), 4.0))
    width = 0.38
    for offset, name in zip((-width / 2, width / 2), PATHS):
        xs, means, errors = [], [], [[], []]
        for i, row in enumerate(rows):
            if name in summary[row]:
                scores = summary[row][name]
                low, high = scores["ci95"]
                xs.append(i + offset)
                means.append(scores["J&F-Mean"])
                errors[0].append(0.0 if math.isnan(low) else scores["J&F-Mean"] - low)
                errors[1].append(0.0 if math.isnan(high) else high - scores["J&F-Mean"])
        if xs:
            label = "encoder features" if name == "trained" else "VEN-refined queries"
            axes.bar(xs, means, width, yerr=errors, capsize=4, label=label)
    for (floor, value), style in zip(floors.items(), ("--", ":")):
        axes.axhline(value, color="black", linestyle=style, linewidth=1, label=f"{floor} floor")
    axes.set_xticks(range(len(rows)), rows)
    axes.set_ylabel("held-out J&F-Mean")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
