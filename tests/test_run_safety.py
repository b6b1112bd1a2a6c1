"""Runs that never lose work or save a wrong state: the workdir lock, the config check on resume
with its history, the guard on saving an exploded state, and storage errors."""

import json
import os
import subprocess
import sys
import time

import pytest

from mer_jax import run_config, train, workdir_lock
from tests import subprocess_env
from tests.test_train import debug_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = subprocess_env.subprocess_env()


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with workdir_lock.WorkdirLock(str(tmp_path)):
        with pytest.raises(workdir_lock.WorkdirLockedError, match=f"in use by process {os.getpid()} on host"):
            workdir_lock.WorkdirLock(str(tmp_path)).acquire()
        workdir_lock.WorkdirLock(str(tmp_path), process_index=1).acquire()  # Another process of the same run.
    assert sorted(os.listdir(tmp_path)) == ["lock.1.json"]  # Released on exit; 1 was never released.


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = {"host": workdir_lock.socket.gethostname(), "pid": int(dead.stdout), "created": "earlier"}
    (tmp_path / "lock.0.json").write_text(json.dumps(holder))
    with workdir_lock.WorkdirLock(str(tmp_path)) as lock:
        assert json.loads((tmp_path / "lock.0.json").read_text())["pid"] == os.getpid()
        lock.heartbeat()


def test_a_lock_from_another_host_is_stale_only_without_heartbeat(tmp_path):
    (tmp_path / "lock.0.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "created": "earlier"}))
    with pytest.raises(workdir_lock.WorkdirLockedError, match="process 1 on host elsewhere"):
        workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    old = time.time() - 3600
    os.utime(tmp_path / "lock.0.json", (old, old))
    with workdir_lock.WorkdirLock(str(tmp_path), stale_after_s=600):
        pass


@pytest.mark.slow
def test_two_runs_on_one_workdir_the_second_stops_at_once(tmp_path):
    command = [sys.executable, "-m", "mer_jax.train", "--config=configs/demo.py:debug", f"--workdir={tmp_path}"]
    first = subprocess.Popen([*command, "--config.num_train_steps=400"], cwd=REPO, env=ENV, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "lock.0.json").exists() and time.time() < deadline:
            time.sleep(0.2)
        start = time.time()
        second = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert f"in use by process {first.pid} on host" in second.stderr
        assert time.time() - start < 60  # No barrier timeout: it stops while starting.
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_resuming_with_changed_fields_is_refused_listing_them(tmp_path):
    train.train_and_evaluate(debug_config(), str(tmp_path))
    changed = debug_config(batch_size=2)
    changed.data.image_size = 48
    with pytest.raises(run_config.ConfigChangedError) as error:
        train.train_and_evaluate(changed, str(tmp_path))
    assert "batch_size: 4 -> 2" in str(error.value) and "data.image_size: 32 -> 48" in str(error.value)
    assert json.loads((tmp_path / "config.json").read_text())["batch_size"] == 4  # Not overwritten.


@pytest.mark.slow
def test_more_steps_need_the_flag_and_every_start_is_in_the_history(tmp_path):
    train.train_and_evaluate(debug_config(), str(tmp_path))
    longer = debug_config(num_train_steps=6, log_every_steps=3)
    with pytest.raises(run_config.ConfigChangedError, match="(?s)num_train_steps: 4 -> 6.*--allow_config_change"):
        train.train_and_evaluate(longer, str(tmp_path))
    state = train.train_and_evaluate(longer, str(tmp_path), allow_config_change=True)
    assert int(state.step) == 6
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["num_train_steps"] == 6
    assert [entry["start_step"] for entry in stored["history"]] == [0, 4]
    assert stored["history"][1]["changed"] == {"log_every_steps": [2, 3], "num_train_steps": [4, 6]}


@pytest.mark.slow
def test_an_update_that_explodes_the_parameters_is_never_saved(tmp_path):
    """lr 1e6: the update is finite, the state it makes is not (its own loss is non-finite)."""
    config = debug_config(checkpoint_every_steps=1)
    config.optim.lr = 1e6
    with pytest.raises(FloatingPointError, match=r"(?s)step 1 .*not saved.* last good checkpoint is step None"):
        train.train_and_evaluate(config, str(tmp_path))
    assert not os.listdir(tmp_path / "checkpoints")


@pytest.mark.slow
def test_an_unwritable_workdir_ends_at_once_with_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "mer_jax.train", "--config=configs/demo.py:debug", f"--workdir={blocker / 'run'}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and time.time() - start < 60
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(blocker) in last and "Not a directory" in last
    assert "Traceback" not in result.stderr
