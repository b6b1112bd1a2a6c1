"""The Table 4 sweep runs rows x seeds with their switches, each in its own workdir, and reports
intervals, paired differences and the floors."""

import json

import pytest

from configs import table4
from mer_jax import sweep


@pytest.mark.slow
def test_sweep_trains_rows_times_seeds_and_reports(tmp_path):
    config = table4.get_config("debug")
    config.sweep.only = "baseline,all"
    config.sweep.seeds = 2
    config.evals.synthetic.at_end = True
    report = sweep.run(config, str(tmp_path))
    for row in ("baseline", "all"):
        for k in range(2):
            saved = json.loads((tmp_path / row / f"seed_{k}" / "config.json").read_text())
            assert {key: saved["model"][key] for key in table4.ROWS[row]} == table4.ROWS[row]
            assert saved["seed"] == config.seed + k
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["rows"].keys() == {"baseline", "all"} and saved["seeds"] == 2
    assert set(saved["floors"]) == {"copy", "lab"}
    assert saved["rows"]["baseline"]["trained"]["vs_baseline"]["mean"] == 0.0
    assert "trained_ven" in saved["rows"]["all"] and "trained_ven" not in saved["rows"]["baseline"]
    for path in ("trained", "trained_ven"):
        scores = saved["rows"]["all"][path]
        assert len(scores["per_seed"]) == 2 and scores["ci95"][0] <= scores["J&F-Mean"] <= scores["ci95"][1]
    assert report["rows"]["all"]["trained"]["vs_baseline"]["pairs"] == 2 * saved["objects"]
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "floor" in (tmp_path / "sweep.txt").read_text()


def test_unknown_rows_and_switches_are_errors(tmp_path):
    config = table4.get_config("debug")
    config.sweep.only = "everything"
    with pytest.raises(ValueError, match="unknown sweep rows"):
        sweep.run(config, str(tmp_path))
    config = table4.get_config("debug")
    config.sweep.rows.baseline.use_magic = True
    with pytest.raises(ValueError, match="unknown switch model.use_magic"):
        sweep.row_config(config, "baseline")
    config = table4.get_config("debug")
    with pytest.raises(ValueError, match="at_end=True"):
        sweep.run(config, str(tmp_path))
