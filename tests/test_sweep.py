"""The Table 4 sweep runs rows x seeds with their switches, each in its own workdir, and reports
intervals, paired differences and the floors."""

import json
import os

import pytest

from configs import real, table4
from mer_jax import sweep, train
from mer_jax.evaluation import benchmark_run, training_evals
from tests import fake_data


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


@pytest.mark.slow
def test_a_davis_sweep_scores_the_floors_once_and_reports_after_each_round_of_seeds(tmp_path, monkeypatch):
    fake_data.davis_tree(str(tmp_path / "DAVIS"), num_sequences=2, num_frames=5)
    config = table4.get_config("debug")
    config.sweep.only, config.sweep.seeds, config.sweep.benchmark = "baseline,all", 2, "davis"
    del config.evals["synthetic"]
    config.evals.davis = real.davis_eval()
    config.evals.davis.update(davis_root=str(tmp_path / "DAVIS"), at_end=True, score_ven=False, feature_batch=2)
    config.evals.davis.presets.mer.radius = 2  # The 12x16 feature grid of the 48x64 frames.
    reported, write_report = [], sweep.write_report

    def counted_report(runs, baseline, workdir):
        reported.append({row: len(results) for row, results in runs.items()})
        return write_report(runs, baseline, workdir)

    monkeypatch.setattr(sweep, "write_report", counted_report)
    report = sweep.run(config, str(tmp_path / "sweep"))
    assert reported == [{"baseline": 1, "all": 1}, {"baseline": 2, "all": 2}]  # Seed by seed.
    # The floors: scored once into the sweep's folder, taken as they are by every run.
    floors = json.loads((tmp_path / "sweep" / sweep.FLOORS).read_text())["floors"]
    assert (tmp_path / "sweep" / "floors" / "lab" / "results.json").exists()
    for row in ("baseline", "all"):
        for k in range(2):
            run_dir = tmp_path / "sweep" / row / f"seed_{k}"
            assert json.loads((run_dir / "eval_davis" / "summary.json").read_text())["floors"] == floors
            assert not (run_dir / "eval_davis" / "floors").exists()
    assert (report["kind"], report["videos"], report["objects"]) == ("DAVIS-2017 val", 2, floors["copy"]["objects"])
    assert report["rows"]["all"]["trained"]["vs_baseline"]["pairs"] == 2 * report["objects"]
    assert "trained_ven" not in report["rows"]["all"]  # score_ven=False.
    # The per-sequence table: each sequence's objects, averaged over the seeds.
    summaries = [json.loads((tmp_path / "sweep" / "all" / f"seed_{k}" / "eval_davis" / "summary.json").read_text())
                 for k in range(2)]  # fmt: skip
    for sequence in ("seq0", "seq1"):
        values = [v for s in summaries for key, v in s["trained"]["per_object"].items() if key.startswith(sequence)]
        assert report["per_sequence"][sequence]["all"] == pytest.approx(sum(values) / len(values), abs=1e-12)
    assert "J&F per sequence" in (tmp_path / "sweep" / "sweep.txt").read_text()

    # Started again: every run is finished and the floors are read, not scored.
    def scored(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(train, "train_and_evaluate", scored)
    monkeypatch.setattr(benchmark_run.BenchmarkRun, "run", scored)
    assert json.loads(json.dumps(sweep.run(config, str(tmp_path / "sweep")))) == json.loads(json.dumps(report))


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


class Stopped(BaseException):
    """Stands in for the process being killed (not an Exception: nothing catches it)."""


@pytest.mark.slow
def test_a_sweep_stopped_in_training_and_in_evaluation_resumes_to_the_same_report(tmp_path, monkeypatch):
    config = table4.get_config("debug")
    config.sweep.only = "baseline,all"
    config.evals.synthetic.at_end = True
    whole = sweep.run(config, str(tmp_path / "whole"))
    calls = []
    train_and_evaluate, evaluate = train.train_and_evaluate, training_evals.TrainingEvaluation.run

    def stopped_in_training(run_config, run_dir, **kwargs):
        calls.append(run_dir)
        if run_dir.endswith(os.path.join("all", "seed_0")):
            train_and_evaluate(run_config, run_dir, stop_at_step=2, **kwargs)  # Checkpointed at step 2.
            raise Stopped
        return train_and_evaluate(run_config, run_dir, **kwargs)

    def stopped_in_evaluation(self, model, workdir):
        raise Stopped

    monkeypatch.setattr(train, "train_and_evaluate", stopped_in_training)
    with pytest.raises(Stopped):
        sweep.run(config, str(tmp_path / "stopped"))

    def counted(run_config, run_dir, **kwargs):
        calls.append(run_dir)
        return train_and_evaluate(run_config, run_dir, **kwargs)

    monkeypatch.setattr(train, "train_and_evaluate", counted)
    monkeypatch.setattr(training_evals.TrainingEvaluation, "run", stopped_in_evaluation)
    with pytest.raises(Stopped):  # Trains steps 3-4 of the interrupted run, then stops in its evaluation.
        sweep.run(config, str(tmp_path / "stopped"))
    assert not (tmp_path / "stopped" / "all" / "seed_0" / "eval_results.json").exists()
    monkeypatch.setattr(training_evals.TrainingEvaluation, "run", evaluate)
    calls.clear()
    resumed = sweep.run(config, str(tmp_path / "stopped"))
    # The finished baseline run is skipped; the interrupted one only evaluates (it had trained).
    assert [os.path.basename(os.path.dirname(path)) for path in calls] == ["all"]
    assert json.loads(json.dumps(resumed)) == json.loads(json.dumps(whole))
    assert (tmp_path / "stopped" / "sweep.txt").read_text() == (tmp_path / "whole" / "sweep.txt").read_text()


def test_a_finished_run_is_reused_only_for_the_same_config(tmp_path, monkeypatch):
    trained = []

    def fake_training(run_config, run_dir, **kwargs):  # Writes what a run's evaluation writes.
        trained.append(run_config.seed)
        os.makedirs(run_dir, exist_ok=True)
        (tmp_path / "run" / "eval_results.json").write_text(json.dumps({"seed": run_config.seed}))

    monkeypatch.setattr(train, "train_and_evaluate", fake_training)
    config = sweep.row_config(table4.get_config("debug"), "baseline")
    first = sweep.run_once(config, str(tmp_path / "run"))
    assert first == {"seed": config.seed, "diagnostics": {}} and trained == [config.seed]
    assert sweep.run_once(config, str(tmp_path / "run")) == first and len(trained) == 1  # Skipped.
    config.evals.synthetic.num_videos += 1  # Another held-out set: trained (resumed) and evaluated again.
    assert sweep.run_once(config, str(tmp_path / "run")) == first and len(trained) == 2
