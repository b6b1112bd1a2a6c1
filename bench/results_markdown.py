"""Markdown tables of a `bench/run_all.py` summary, appended to bench/RESULTS.md as one section.

`section(summary, command)` renders the machine line (date, device, backend, versions) and one
table per benchmark from the JSON that each benchmark script wrote; `append(path, text)` adds it
to the record.
"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def train_step_table(results: dict) -> str:
    """One row per config spec of bench/train_step.py's JSON."""
    header = ["config", "batch", "size", "step (s)", "clips/s", "encoder", "VEN", "sampler", "loss",
              "TFLOP/step", "TFLOP/s", "MFU", "peak GB"]  # fmt: skip
    rows = []
    for spec, r in results.items():
        parts = r["parts"]
        peak = r["device_peak_gb"] or r["compiled_gb"]
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
        rows.append([spec, str(r["batch_size"]), str(r["image_size"]), _number(r["step_s"]),
                     _number(r["clips_per_s"]), *(_number(parts[p]) for p in ("encoder", "ven", "sampler", "loss")),
                     _number(r["tflops_per_step"]), _number(r["achieved_tflops"]), mfu, _number(peak)])  # fmt: skip
    return _table(header, rows)


def propagation_table(results: list[dict]) -> str:
    """One row per (preset, encoder) of bench/propagation.py's JSON."""
    header = ["preset", "encoder", "size", "frames", "compile (s)", "steady frames/s", "features frames/s",
              "propagation frames/s", "end to end frames/s", "peak RSS GB", "device GB"]  # fmt: skip
    return _table(header, [_propagation_row(r) for r in results])


def _propagation_row(r: dict) -> list[str]:
    e2e = f"{_number(r['e2e_fps'])} ({r['sequence']})" if "e2e_fps" in r else "-"
    numbers = ("compile_s", "steady_fps", "features_fps", "propagation_fps")
    return [r["preset"], r["encoder"], r["size"], str(r["frames"]), *(_number(r[k]) for k in numbers), e2e,
            _number(r["peak_rss_gb"]), _number(r["device_peak_gb"])]  # fmt: skip


def ven_table(rows: list[dict]) -> str:
    """One row per (part, kernel, mode) of bench/ven_attention.py's JSON."""
    header = ["part", "attention", "train", "batch", "grid", "fwd (s)", "fwd+bwd (s)", "temp MB"]
    return _table(header, [_ven_row(r) for r in rows])


def _ven_row(r: dict) -> list[str]:
    return [r["part"], r["attention"], str(r["train"]), str(r["batch"]), f"{r['size']}x{r['size']}",
            _number(r["fwd_s"]), _number(r["fwd_bwd_s"]), _number(r["temp_mb"])]  # fmt: skip


def input_pipeline_table(result: dict) -> str:
    """One row per reader-thread count of bench/input_pipeline.py's JSON."""
    rows = [[str(r["workers"]), _number(r["batch_s"]), _number(r["clips_per_s"])] for r in result["runs"]]
    return _table(["reader threads", "batch (s)", "clips/s"], rows)


TABLES = {
    "train_step": ("Train step", train_step_table),
    "propagation": ("Label propagation", propagation_table),
    "ven_attention": ("VEN attention", ven_table),
    "input_pipeline": ("Input pipeline", input_pipeline_table),
}


def section(summary: dict, command: str) -> str:
    """The RESULTS.md section of one run_all summary: heading, machine and versions, command, and a
    table per benchmark present in the summary."""
    m = summary["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in m["versions"].items())
    parts = [
        f"## `bench/run_all.py` on {m['device_kind']} ({m['date']})",
        f"{m['devices']} x {m['device_kind']} (backend {m['backend']}, {m['platform_version']}); host "
        f"{m['host']}, {m['cpu_count']} cores; {versions}; size `{summary['size']}`.\n\n`{command}`",
    ]
    for key, (title, table) in TABLES.items():
        if key in summary:
            parts.append(f"{title}:\n\n{table(summary[key])}")
    return "\n\n".join(parts) + "\n"


def append(path: str, text: str) -> None:
    """Appends `text` to the markdown file at `path`, separated by a blank line."""
    with open(path, "a") as f:
        f.write("\n" + text)
