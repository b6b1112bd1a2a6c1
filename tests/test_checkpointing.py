"""Tests of checkpointing: checksums, restore falling back past damaged steps, and storage failures."""

import errno
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils.epath import gpath

from mer_jax import checkpoint_integrity, checkpointing

# Orbax, failing to read a damaged step or to write one, leaves coroutines and asyncio callbacks behind that
# pytest reports as unraisable whenever they are collected (often during a later test).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

STEPS = (2, 4, 6, 8)


def state_at(step: int) -> dict:
    """A tiny train state whose every value depends on the step."""
    return {
        "params": {
            "w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4) * 0.25 + step,
            "b": jnp.full(5, -step, jnp.float32),
        },
        "step": jnp.int32(step),
    }


def abstract_state() -> dict:
    return checkpointing.with_sharding(
        jax.eval_shape(lambda: state_at(0)), jax.sharding.SingleDeviceSharding(jax.devices()[0])
    )


def write_steps(directory, steps=STEPS, max_to_keep=5) -> None:
    checkpointer = checkpointing.Checkpointer(str(directory), max_to_keep=max_to_keep)
    for step in steps:
        checkpointer.save(step, state_at(step))
    checkpointer.close()


def must_not_init():
    raise AssertionError("init_fn called although a checkpoint should have been restored")


def restore(directory, init_fn=must_not_init, abstract=None) -> tuple[dict, int | None]:
    checkpointer = checkpointing.Checkpointer(str(directory), max_to_keep=5)
    try:
        state = checkpointer.restore_or_init(init_fn, abstract if abstract is not None else abstract_state())
        return state, checkpointer.restored_step
    finally:
        checkpointer.close()


def assert_state_is(state: dict, step: int) -> None:
    expected = state_at(step)
    np.testing.assert_allclose(np.asarray(state["params"]["w"]), np.asarray(expected["params"]["w"]), rtol=0, atol=0)
    np.testing.assert_allclose(np.asarray(state["params"]["b"]), np.asarray(expected["params"]["b"]), rtol=0, atol=0)
    assert int(state["step"]) == step


def warnings_of(caplog) -> list[str]:
    """The warnings logged by mer_jax.checkpointing (Orbax logs its own)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and os.path.basename(r.pathname) == "checkpointing.py"
    ]


def largest_file(step_dir) -> str:
    files = [p for p in glob.glob(os.path.join(step_dir, "default", "**"), recursive=True) if os.path.isfile(p)]
    return max(files, key=os.path.getsize)


def array_data_file(step_dir) -> str:
    """The OCDBT data file that holds the arrays (the largest under `default/d/`)."""
    return max(glob.glob(os.path.join(step_dir, "default", "d", "*")), key=os.path.getsize)


def flip_bytes(path: str, count: int = 3) -> None:
    """Inverts `count` bytes in the middle of the file, keeping its size."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        data = f.read(count)
        f.seek(-len(data), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in data))


def test_saved_steps_carry_a_checksum_of_every_file_and_restore_the_newest(tmp_path, caplog):
    write_steps(tmp_path)
    for step in STEPS:
        step_dir = tmp_path / str(step)
        listed = set(json.loads((step_dir / checkpoint_integrity.CHECKSUM_FILE).read_text())["files"])
        on_disk = {
            os.path.relpath(p, step_dir) for p in glob.glob(f"{step_dir}/**", recursive=True) if os.path.isfile(p)
        }
        # Everything but the checksum itself and Orbax's two step-level commit records.
        assert listed <= on_disk
        assert on_disk - listed == {checkpoint_integrity.CHECKSUM_FILE, "_CHECKPOINT_METADATA", "commit_success.txt"}
        assert any(name.startswith("default/d/") for name in listed)
        assert checkpoint_integrity.verify(str(step_dir), "default") == (None, True)
    with caplog.at_level(logging.WARNING):
        state, step = restore(tmp_path)
    assert step == 8
    assert_state_is(state, 8)
    assert not warnings_of(caplog)


def truncate_largest(directory):
    path = largest_file(directory / "8")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def empty_newer_folder(directory):
    os.mkdir(directory / "10")


def junk_newer_folder(directory):
    os.mkdir(directory / "10")
    (directory / "10" / "notes.txt").write_text("not a checkpoint")


@pytest.mark.parametrize(
    "damage, skipped, reason",
    [
        (truncate_largest, 8, "were written (truncated or damaged)"),
        (lambda d: os.remove(d / "8" / "default" / "_METADATA"), 8, "missing file default/_METADATA"),
        (lambda d: flip_bytes(array_data_file(d / "8")), 8, "checksum mismatch in default/d/"),
        (
            lambda d: (
                os.remove(d / "8" / checkpoint_integrity.CHECKSUM_FILE) or flip_bytes(d / "8" / "default" / "_METADATA")
            ),
            8,
            "Orbax cannot restore it",
        ),
        (empty_newer_folder, 10, "empty folder"),
        (junk_newer_folder, 10, "no 'default' in it (holds notes.txt)"),
    ],
    ids=["truncated", "missing_metadata", "flipped_bytes", "unverified_and_unreadable", "empty_folder", "junk_folder"],
)
def test_damaged_newest_step_falls_back_to_the_previous_one(tmp_path, caplog, damage, skipped, reason):
    write_steps(tmp_path)
    damage(tmp_path)
    fallback = 6 if skipped == 8 else 8
    with caplog.at_level(logging.WARNING):
        state, step = restore(tmp_path)
    assert step == fallback
    assert_state_is(state, fallback)
    [warning] = warnings_of(caplog)
    assert warning.startswith(f"skipping checkpoint step {skipped} in {tmp_path}: ")
    assert reason in warning
    assert warning.endswith(f"; falling back to step {fallback}")


def test_several_damaged_steps_are_each_named(tmp_path, caplog):
    write_steps(tmp_path)
    flip_bytes(array_data_file(tmp_path / "8"))
    truncate_largest(tmp_path)  # Now also truncated: the size check names it first.
    os.remove(tmp_path / "6" / "default" / "_METADATA")
    with caplog.at_level(logging.WARNING):
        state, step = restore(tmp_path)
    assert step == 4
    assert_state_is(state, 4)
    warnings = warnings_of(caplog)
    assert [w.split(":")[0] for w in warnings] == [
        f"skipping checkpoint step 8 in {tmp_path}",
        f"skipping checkpoint step 6 in {tmp_path}",
    ]


def test_step_without_checksum_restores_with_a_warning(tmp_path, caplog):
    write_steps(tmp_path)
    os.remove(tmp_path / "8" / checkpoint_integrity.CHECKSUM_FILE)
    with caplog.at_level(logging.WARNING):
        state, step = restore(tmp_path)
    assert step == 8
    assert_state_is(state, 8)
    [warning] = warnings_of(caplog)
    assert "step 8" in warning and "restored unverified" in warning


def test_no_usable_step_is_one_clear_error_naming_each_step_and_the_remedy(tmp_path):
    write_steps(tmp_path, steps=(2, 4))
    shutil.rmtree(tmp_path / "4")
    os.mkdir(tmp_path / "4")
    flip_bytes(array_data_file(tmp_path / "2"))
    with pytest.raises(checkpointing.CheckpointRestoreError) as error:
        restore(tmp_path)
    message = str(error.value)
    assert f"no usable checkpoint in {tmp_path}:" in message
    assert "step 4: empty folder" in message
    assert "step 2: checksum mismatch in default/d/" in message
    assert f"mv {tmp_path / '4'} {tmp_path / '4'}.damaged" in message
    assert "Traceback" not in message


def test_no_step_at_all_initialises(tmp_path):
    state, step = restore(tmp_path, init_fn=lambda: state_at(0))
    assert step is None
    assert_state_is(state, 0)


def test_intact_step_of_another_state_is_an_error_not_a_fallback(tmp_path):
    write_steps(tmp_path)
    other = dict(
        abstract_state(), params={"w": jax.ShapeDtypeStruct((4, 4), jnp.float32), "b": abstract_state()["params"]["b"]}
    )
    with pytest.raises(checkpointing.CheckpointRestoreError, match="step 8 .* is intact .* different config"):
        restore(tmp_path, abstract=other)


def test_first_save_after_a_fallback_sets_damaged_steps_aside(tmp_path, caplog):
    write_steps(tmp_path, max_to_keep=3)
    empty_newer_folder(tmp_path)
    flip_bytes(array_data_file(tmp_path / "8"))
    checkpointer = checkpointing.Checkpointer(str(tmp_path), max_to_keep=3)
    assert_state_is(checkpointer.restore_or_init(must_not_init, abstract_state()), 6)
    assert checkpointer.restored_step == checkpointer.last_good_step() == 6
    assert sorted(os.listdir(tmp_path)) == ["10", "4", "6", "8"]  # Restoring alone changes nothing.
    for step in (8, 10, 12):
        checkpointer.save(step, state_at(step))
    assert checkpointer.last_good_step() == 12
    checkpointer.close()
    # max_to_keep=3 counts only usable steps; a deleted step's checksum goes with its folder.
    assert sorted(os.listdir(tmp_path)) == ["10", "10.damaged", "12", "8", "8.damaged"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        state, step = restore(tmp_path)
    assert step == 12
    assert_state_is(state, 12)
    assert not warnings_of(caplog)


def fail_writes_into(step: int, directory, monkeypatch) -> None:
    """Makes every Python-level file write of Orbax's save of `step` fail as on a full disk."""
    write_text = gpath.PosixGPath.write_text
    marker = f"{directory}{os.sep}{step}."

    def full_disk(self, *args, **kwargs):
        if str(self).startswith(marker):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(gpath.PosixGPath, "write_text", full_disk)


def test_full_disk_during_a_background_save_is_one_clear_error_and_keeps_the_last_step(tmp_path, monkeypatch):
    checkpointer = checkpointing.Checkpointer(str(tmp_path), max_to_keep=1)
    checkpointer.save(2, state_at(2))
    checkpointer.wait_until_finished()
    fail_writes_into(4, tmp_path, monkeypatch)
    start = time.perf_counter()
    checkpointer.save(4, state_at(4))  # Returns: the write fails in Orbax's background threads.
    with pytest.raises(checkpointing.CheckpointWriteError) as error:
        while True:  # As a train loop would poll between steps.
            checkpointer.check_for_errors()
            assert time.perf_counter() - start < 30, "the failed save was never reported"
            time.sleep(0.01)
    assert str(error.value).startswith(f"cannot write checkpoint step 4 to {tmp_path}: [Errno 28] No space left")
    assert error.value.errno == errno.ENOSPC
    assert "\n" not in str(error.value)
    assert checkpointer.last_good_step() == 2
    checkpointer.close()  # Already raised: not raised again.
    monkeypatch.undo()
    state, step = restore(tmp_path)
    assert step == 2
    assert_state_is(state, 2)


def test_failed_save_is_raised_by_the_next_save_or_by_close(tmp_path, monkeypatch):
    fail_writes_into(2, tmp_path, monkeypatch)
    checkpointer = checkpointing.Checkpointer(str(tmp_path), max_to_keep=2)
    checkpointer.save(2, state_at(2))
    with pytest.raises(checkpointing.CheckpointWriteError, match="cannot write checkpoint step 2 .*Errno 28"):
        checkpointer.save(4, state_at(4))
    checkpointer.close()
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "other"), max_to_keep=2)
    fail_writes_into(2, tmp_path / "other", monkeypatch)
    checkpointer.save(2, state_at(2))
    with pytest.raises(checkpointing.CheckpointWriteError, match="cannot write checkpoint step 2 .*Errno 28"):
        checkpointer.close()
    assert not [name for name in os.listdir(tmp_path / "other") if name.isdigit()]


def test_checkpoint_folder_that_is_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "checkpoints").write_text("in the way")
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=1)
    with pytest.raises(checkpointing.CheckpointWriteError) as error:
        checkpointer.save(2, state_at(2))
    assert str(error.value).startswith(f"cannot write checkpoint step 2 to {tmp_path / 'checkpoints'}: [Errno 20]")
    assert error.value.errno == errno.ENOTDIR
    checkpointer.close()


def test_checkpoint_folder_under_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "workdir").write_text("in the way")
    with pytest.raises(checkpointing.CheckpointWriteError) as error:
        checkpointing.Checkpointer(str(tmp_path / "workdir" / "checkpoints"), max_to_keep=1)
    assert str(error.value).startswith(f"cannot create checkpoint directory {tmp_path / 'workdir' / 'checkpoints'}: ")
    assert error.value.errno == errno.ENOTDIR


READ_ONLY_RUN = """
import os, sys
import jax.numpy as jnp
from mer_jax import checkpointing
directory = sys.argv[1]
checkpointer = checkpointing.Checkpointer(directory, max_to_keep=1)
checkpointer.save(2, {"w": jnp.arange(4.0)})
checkpointer.wait_until_finished()
os.chmod(directory, 0o555)
try:
    checkpointer.save(4, {"w": jnp.arange(4.0) + 4})
    checkpointer.wait_until_finished()
except checkpointing.CheckpointWriteError as error:
    print("ERROR:", error)
checkpointer.close()
"""


@pytest.mark.slow
def test_read_only_folder_fails_at_once_and_the_process_exits(tmp_path):
    """A real read-only folder, in a subprocess: Orbax used to leave threads waiting 5 minutes at exit."""
    command = [sys.executable, "-c", textwrap.dedent(READ_ONLY_RUN), str(tmp_path / "checkpoints")]
    if os.geteuid() == 0:  # Root ignores permissions unless it drops the capabilities that bypass them.
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder read-only")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.perf_counter() - start < 60
    assert f"ERROR: cannot write checkpoint step 4 to {tmp_path / 'checkpoints'}: [Errno 13] Permission denied" in (
        result.stdout
    )
    os.chmod(tmp_path / "checkpoints", 0o755)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    assert checkpoint_integrity.verify(str(tmp_path / "checkpoints" / "2"), "default") == (None, True)
