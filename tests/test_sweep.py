"""The Table 4 sweep runs its rows with their switches, each in its own workdir."""

import json

import pytest

from configs import table4
from mer_jax import sweep


def test_sweep_trains_selected_rows_with_their_switches(tmp_path):
    config = table4.get_config("debug")
    config.sweep.only = "baseline,all"
    results = sweep.run(config, str(tmp_path))
    assert set(results) == {"baseline", "all"}
    for row in ("baseline", "all"):
        saved = json.loads((tmp_path / row / "config.json").read_text())
        assert {k: saved["model"][k] for k in table4.ROWS[row]} == table4.ROWS[row]
        assert sorted(p.name for p in (tmp_path / row / "checkpoints").iterdir()) == ["2", "4"]
    assert json.loads((tmp_path / "sweep_results.json").read_text()) == {"baseline": {}, "all": {}}


def test_unknown_rows_and_switches_are_errors(tmp_path):
    config = table4.get_config("debug")
    config.sweep.only = "everything"
    with pytest.raises(ValueError, match="unknown sweep rows"):
        sweep.run(config, str(tmp_path))
    config = table4.get_config("debug")
    config.sweep.rows.baseline.use_magic = True
    with pytest.raises(ValueError, match="unknown switch model.use_magic"):
        sweep.row_config(config, "baseline")
