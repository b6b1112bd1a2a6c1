"""bench/paired_rows.py: rows of two sweep folders paired object by object, seed k with seed k."""

import importlib.util
import json
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "paired_rows.py")
_SPEC = importlib.util.spec_from_file_location("paired_rows", _PATH)
paired_rows = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(paired_rows)


def _write_row(folder, per_seed_objects, copy=0.2):
    for seed, objects in enumerate(per_seed_objects):
        scores = {"J&F-Mean": float(np.mean(list(objects.values()))), "per_object": objects}
        floors = {"copy": {"J&F-Mean": copy, "per_object": {k: copy for k in objects}}}
        results = {"trained": scores, "floors": floors, "diagnostics": {"value_map_auc": 0.5 + 0.1 * seed}}
        os.makedirs(folder / f"seed_{seed}")
        (folder / f"seed_{seed}" / "sweep_run.json").write_text(json.dumps({"config": {}, "results": results}))


def test_rows_of_two_sweeps_are_paired_over_the_seeds_both_have(tmp_path):
    _write_row(tmp_path / "a" / "all", [{"v/1": 0.3, "v/2": 0.5}, {"v/1": 0.2, "v/2": 0.4}])
    _write_row(tmp_path / "b" / "all", [{"v/1": 0.4, "v/2": 0.5}, {"v/1": 0.3, "v/2": 0.6}, {"v/1": 0.9, "v/2": 0.9}])
    rows = {"old": str(tmp_path / "a" / "all"), "new": str(tmp_path / "b" / "all")}
    summary, table = paired_rows.compare(rows, "old")
    new = summary["new"]["trained"]
    # Seeds 0 and 1 only (the old row has two): differences 0.1, 0.0, 0.1, 0.2 -> mean 0.1.
    assert new["per_seed"] == pytest.approx([0.45, 0.45])
    assert new["vs_baseline"]["mean"] == pytest.approx(0.1) and new["vs_baseline"]["pairs"] == 4
    half = 3.182446305284263 * np.std([0.1, 0.0, 0.1, 0.2], ddof=1) / 2  # t(0.975, 3) s / sqrt(4)
    assert new["vs_baseline"]["ci95"] == pytest.approx([0.1 - half, 0.1 + half])
    assert summary["new"]["diagnostics"]["value_map_auc"]["per_seed"] == pytest.approx([0.5, 0.6])
    assert "new" in table and "value_map_auc" in table


def test_rows_scored_on_other_videos_or_unfinished_are_refused(tmp_path):
    _write_row(tmp_path / "a", [{"v/1": 0.3}])
    _write_row(tmp_path / "b", [{"v/1": 0.3}], copy=0.3)
    with pytest.raises(ValueError, match="other held-out videos"):
        paired_rows.compare({"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}, "a")
    with pytest.raises(FileNotFoundError, match="not a finished sweep row"):
        paired_rows.read_row(str(tmp_path / "missing"))
