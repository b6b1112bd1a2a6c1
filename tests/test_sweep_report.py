"""Sweep statistics against hand-computed cases; the table and chart of a summary."""

import math

import numpy as np
import pytest

from mer_jax import sweep_report


def test_mean_interval_is_the_student_t_interval():
    # mean 2, s = 1, t_{0.975, 2} = 4.302653 (tables): half-width 4.302653 / sqrt(3) = 2.484138.
    mean, low, high = sweep_report.mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert low == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert high == pytest.approx(2.0 + 2.484138, abs=1e-6)
    # Ten values: t_{0.975, 9} = 2.262157.
    values = np.arange(10.0)
    mean, low, high = sweep_report.mean_interval(values)
    assert high - mean == pytest.approx(2.262157 * np.std(values, ddof=1) / math.sqrt(10), abs=1e-6)
    mean, low, high = sweep_report.mean_interval([0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)


def test_paired_differences_pair_seeds_and_objects():
    row = [{"a": 0.5, "b": 0.7, "c": 0.9}, {"a": 0.6, "b": 0.2}]
    base = [{"a": 0.4, "b": 0.7}, {"a": 0.3, "b": 0.4, "c": 0.1}]
    np.testing.assert_allclose(sweep_report.paired_differences(row, base), [0.1, 0.0, 0.3, -0.2])
    with pytest.raises(ValueError, match="paired seeds differ"):
        sweep_report.paired_differences(row, base[:1])


def _run(jf_per_object, ven=None, diagnostics=None):
    def scores(values):
        return {"J&F-Mean": float(np.mean(list(values.values()))), "per_object": values}

    floors = {"copy": scores({"v_1": 0.5, "v_2": 0.5}), "lab": scores({"v_1": 0.1, "v_2": 0.2})}
    run = {"trained": scores(jf_per_object), "floors": floors, "diagnostics": diagnostics or {}}
    if ven is not None:
        run["trained_ven"] = scores(ven)
    return run


def test_summarise_reports_means_intervals_differences_and_diagnostics(tmp_path):
    runs = {
        "baseline": [_run({"v_1": 0.4, "v_2": 0.6}), _run({"v_1": 0.5, "v_2": 0.5})],
        "motion": [
            _run({"v_1": 0.6, "v_2": 0.6}, ven={"v_1": 0.3, "v_2": 0.5}, diagnostics={"flow_alpha": 0.1, "step": 5}),
            _run({"v_1": 0.7, "v_2": 0.7}, ven={"v_1": 0.4, "v_2": 0.4}, diagnostics={"flow_alpha": 0.3, "step": 5}),
        ],
    }
    summary = sweep_report.summarise(runs, "baseline")
    motion = summary["motion"]
    assert motion["trained"]["per_seed"] == [0.6, 0.7]
    assert motion["trained"]["J&F-Mean"] == pytest.approx(0.65)
    # Differences (0.2, 0.0, 0.2, 0.2): mean 0.15, s = 0.1, t_{0.975, 3} = 3.182446.
    versus = motion["trained"]["vs_baseline"]
    assert versus["pairs"] == 4 and versus["mean"] == pytest.approx(0.15)
    assert versus["ci95"][1] - 0.15 == pytest.approx(3.182446 * 0.1 / 2, abs=1e-6)
    assert motion["trained_ven"]["vs_baseline"]["mean"] == pytest.approx((-0.1 - 0.1 - 0.1 - 0.1) / 4)
    # Against the floors, object by object: copy (0.5, 0.5), lab (0.1, 0.2) in both seeds.
    assert motion["trained"]["vs_floors"]["copy"]["mean"] == pytest.approx((0.1 + 0.1 + 0.2 + 0.2) / 4)
    assert motion["trained"]["vs_floors"]["lab"]["mean"] == pytest.approx((0.5 + 0.4 + 0.6 + 0.5) / 4)
    assert motion["trained"]["vs_floors"]["lab"]["pairs"] == 4
    assert "trained_ven" not in summary["baseline"]
    assert summary["baseline"]["trained"]["vs_baseline"]["mean"] == 0.0
    assert motion["diagnostics"] == {
        "flow_alpha": {"mean": pytest.approx(0.2),
                       "ci95": pytest.approx(list(sweep_report.mean_interval([0.1, 0.3])[1:])),
                       "per_seed": [0.1, 0.3]}
    }  # fmt: skip
    table = sweep_report.format_table(summary, {"copy": 0.3, "lab": 0.2}, "baseline")
    assert "motion       trained_ven" in table and "+0.1500" in table and "vs copy floor" in table
    sweep_report.write_chart(str(tmp_path / "chart.png"), summary, {"copy": 0.3, "lab": 0.2}, "test")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="baseline row"):
        sweep_report.summarise(runs, "nothing")


def test_per_sequence_averages_each_sequences_objects_over_seeds():
    # Objects "<sequence>_<id>"; a sequence name may itself hold underscores.
    def run(values):
        copy = {"a_b_1": 0.2, "a_b_2": 0.4, "c_1": 0.9}
        return {"trained": {"per_object": values}, "floors": {"copy": {"per_object": copy}}}

    runs = {
        "baseline": [run({"a_b_1": 0.5, "a_b_2": 0.7, "c_1": 0.1}), run({"a_b_1": 0.3, "a_b_2": 0.5, "c_1": 0.3})],
        "all": [run({"a_b_1": 1.0, "a_b_2": 0.0, "c_1": 0.6}), run({"a_b_1": 0.0, "a_b_2": 0.0, "c_1": 0.8})],
    }
    sequences = sweep_report.per_sequence(runs)
    assert list(sequences) == ["a_b", "c"]
    assert sequences["a_b"] == pytest.approx({"baseline": 0.5, "all": 0.25, "copy floor": 0.3})
    assert sequences["c"] == pytest.approx({"baseline": 0.2, "all": 0.7, "copy floor": 0.9})
    table = sweep_report.format_sequences(sequences).splitlines()
    assert table[1].split() == ["sequence", "baseline", "all", "copy", "floor"]
    assert table[2].split() == ["a_b", "0.5000", "0.2500", "0.3000"]
    assert table[3].split() == ["c", "0.2000", "0.7000", "0.9000"]
