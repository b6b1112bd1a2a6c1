"""Thin Orbax wrapper: restore-or-init of the train state (falling back past damaged checkpoints), periodic
asynchronous saves that fail with one clear error, exported trees and the run's config saved beside them."""

import json
import os
import threading
from typing import Any, Callable

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Sharding

from mer_jax import checkpoint_integrity

# Orbax's single item: a step folder `<step>/` holds the train state in `<step>/default/`.
_ITEM = "default"


def with_sharding(abstract_tree: Any, sharding: Sharding) -> Any:
    """Gives every leaf of an abstract pytree (ShapeDtypeStructs) the same sharding."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_tree)


class CheckpointWriteError(OSError):
    """A checkpoint step could not be written (no permission, no space, ...); earlier steps are intact.

    `errno` is the cause's errno when the cause was an OSError, else None.
    """


class CheckpointRestoreError(RuntimeError):
    """No checkpoint in the directory can be restored into the train state."""


def _first_line(error: BaseException) -> str:
    """The error's first line (Orbax and TensorStore append pages of specs), cut to 400 characters."""
    line = (str(error).strip().splitlines() or [""])[0][:400]
    return line if isinstance(error, OSError) else f"{type(error).__name__}: {line}"


def _write_error(step: int | None, directory: str, cause: BaseException) -> CheckpointWriteError:
    error = CheckpointWriteError(f"cannot write checkpoint step {step} to {directory}: {_first_line(cause)}")
    error.errno = getattr(cause, "errno", None)
    return error


class Checkpointer:
    """Saves the train state under `directory/<step>` (asynchronously) and restores the newest usable step.

    A save is atomic (Orbax writes to a temporary folder and renames it), so a run killed at any moment
    leaves only complete checkpoints. Each save also writes `<step>/mer_checksum.json` (see
    `checkpoint_integrity`) into the temporary folder after every other file of the step is complete and
    before the rename, so a committed step always carries the checksum of its files.

    A save that cannot be written raises `CheckpointWriteError`, naming the step, the directory and the cause,
    from whichever of `check_for_errors`, `save`, `wait_until_finished` and `close` first sees the failure;
    the steps saved before it are left intact.
    """

    def __init__(self, directory: str, *, max_to_keep: int):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        async_options = ocp.AsyncOptions(
            # Made in the caller's thread, a step folder that cannot be created fails `save` at once; made in
            # the background, its failure leaves Orbax's writer threads waiting 5 minutes for it.
            create_directories_asynchronously=False,
            post_finalization_callback=self._write_checksum,
        )
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, async_options=async_options)
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as e:
            error = CheckpointWriteError(f"cannot create checkpoint directory {self.directory}: {_first_line(e)}")
            error.errno = e.errno
            raise error from None
        self._saving_step: int | None = None  # The step of the save in progress (read by _write_checksum).
        self._restored_step: int | None = None
        self._last_good_step: int | None = None
        self._damaged_steps: list[int] = []  # Skipped by the restore; set aside by the next save.
        self._watcher: threading.Thread | None = None
        self._failure: CheckpointWriteError | None = None
        self._failure_raised = False

    def latest_step(self) -> int | None:
        """The newest step folder Orbax lists (unchecked: it may be damaged)."""
        return self.manager.latest_step()

    @property
    def restored_step(self) -> int | None:
        """The step `restore_or_init` restored (None before it or if it initialised)."""
        return self._restored_step

    def last_good_step(self) -> int | None:
        """The newest step known to hold a complete checkpoint: the last save of this run that finished
        writing (waiting for one in progress), else the restored step; None if neither. Never raises."""
        self._join_watcher()
        return self._last_good_step

    def restore_or_init(self, init_fn: Callable[[], Any], abstract_state: Any) -> Any:
        """The newest usable checkpoint restored into `abstract_state`'s shapes/shardings, else init_fn().

        Steps are tried newest first. A step is skipped, with a warning naming it and why, if its folder is
        empty or holds no Orbax item, its files differ from their checksum, or it has no checksum and
        Orbax cannot restore it. A step whose files match their checksum but that does not restore is not
        damaged: it was written for another train state (e.g. another config), and this raises rather than
        falling back to an older step. A step without a checksum that restores is used, with a warning.

        Raises:
            CheckpointRestoreError: step folders exist but none is usable (naming each step and why), or an
                intact step does not fit `abstract_state`.
        """
        skipped: list[tuple[int, str]] = []
        for step in self._step_folders():
            step_dir = os.path.join(self.directory, str(step))
            # Checked before Orbax sees the folder: Orbax takes a step without `_ITEM` for a multi-item checkpoint
            # and then refuses every later restore.
            problem, verified = checkpoint_integrity.verify(step_dir, _ITEM)
            if problem is None:
                try:
                    state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
                except Exception as e:  # any failure to read the step is reported with it.
                    if verified:
                        raise CheckpointRestoreError(
                            f"checkpoint step {step} in {self.directory} is intact (its files match their "
                            f"checksum) but does not restore into this run's train state: {_first_line(e)}. "
                            "It was probably written with a different config; resume with that config or use "
                            "a new workdir."
                        ) from None
                    problem = f"Orbax cannot restore it: {_first_line(e)}"
            if problem is not None:
                skipped.append((step, problem))
                continue
            for bad_step, reason in skipped:
                logging.warning(
                    "skipping checkpoint step %d in %s: %s; falling back to step %d",
                    bad_step,
                    self.directory,
                    reason,
                    step,
                )
            if not verified:
                logging.warning(
                    "checkpoint step %d in %s has no %s (written by an older mer_jax?): restored unverified",
                    step,
                    self.directory,
                    checkpoint_integrity.CHECKSUM_FILE,
                )
            logging.info("Restored checkpoint of step %d from %s", step, self.directory)
            self._restored_step = self._last_good_step = step
            self._damaged_steps = [bad_step for bad_step, _ in skipped]
            return state
        if skipped:
            raise CheckpointRestoreError(_no_usable_checkpoint_message(self.directory, skipped))
        return init_fn()

    def _step_folders(self) -> list[int]:
        """Steps of the entries named by an integer in the directory (folders or not), newest first."""
        if not os.path.isdir(self.directory):
            return []
        return sorted((int(name) for name in os.listdir(self.directory) if name.isdigit()), reverse=True)

    def save(self, step: int, state: Any) -> None:
        """Starts an asynchronous save of `state` as `step` (a no-op if that step exists).

        Waits for the previous save first. The first save after a restore that skipped damaged steps renames
        their folders to `<step>.damaged` (process 0), so that new saves can take their step numbers and
        `max_to_keep` counts only usable steps.

        Raises:
            CheckpointWriteError: this save or the previous one cannot be written.
        """
        self.wait_until_finished()
        self._set_aside_damaged_steps()
        if step in self.manager.all_steps():
            return
        self._saving_step = step
        try:
            self.manager.save(step, args=ocp.args.StandardSave(state))
        except Exception as e:  # reported as one error naming the step, directory and cause.
            self._failure = _write_error(step, self.directory, e)
            self._failure_raised = True
            raise self._failure from None
        self._watcher = threading.Thread(target=self._watch, args=(step,), name="checkpoint_watcher", daemon=True)
        self._watcher.start()

    def _watch(self, step: int) -> None:
        """Waits (in a thread) for the save of `step` to finish, so that its failure is seen at once."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # kept and raised in the caller's thread.
            self._failure = _write_error(step, self.directory, e)
            logging.error("%s", self._failure)
        else:
            self._last_good_step = step

    def _join_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None

    def _write_checksum(self) -> None:
        """Orbax's post-finalization callback: on process 0, after every process has written its files and
        the handler has finalized them, and before the temporary folder is renamed to `<step>`."""
        if jax.process_index() != 0:
            return
        temporary = os.path.join(self.directory, f"{self._saving_step}{ocp.path.atomicity_types.TMP_DIR_SUFFIX}")
        if not os.path.isdir(temporary):
            logging.warning("no folder %s to checksum: step %s is saved unverified", temporary, self._saving_step)
            return
        checkpoint_integrity.write_checksum(temporary)

    def _set_aside_damaged_steps(self) -> None:
        if not self._damaged_steps:
            return
        if jax.process_index() == 0:
            for step in self._damaged_steps:
                try:
                    target = checkpoint_integrity.set_aside(os.path.join(self.directory, str(step)))
                except OSError as e:
                    raise _write_error(step, self.directory, e) from None
                logging.warning("moved damaged checkpoint step %d aside to %s", step, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("mer_jax: damaged checkpoints set aside")
        self._damaged_steps = []
        self.manager.reload()

    def check_for_errors(self) -> None:
        """Raises CheckpointWriteError if a save has failed; returns at once otherwise (a save in progress
        is not waited for). Cheap enough to call every step."""
        if self._failure is not None:
            self._failure_raised = True
            raise self._failure

    def wait_until_finished(self) -> None:
        """Blocks until the save in progress is written; raises CheckpointWriteError if a save failed."""
        self._join_watcher()
        self.check_for_errors()

    def close(self) -> None:
        """Waits for the save in progress and releases the manager. Raises CheckpointWriteError if a save
        failed and that error was not raised yet (so that an error already propagating is not repeated)."""
        self._join_watcher()
        try:
            self.manager.close()
        except Exception as e:  # Orbax raises a background failure again here.
            if self._failure is None:
                self._failure = _write_error(self._saving_step, self.directory, e)
        if self._failure is not None and not self._failure_raised:
            self._failure_raised = True
            raise self._failure


def _no_usable_checkpoint_message(directory: str, skipped: list[tuple[int, str]]) -> str:
    lines = [f"no usable checkpoint in {directory}:"]
    lines += [f"  step {step}: {reason}" for step, reason in skipped]
    example = os.path.join(directory, str(skipped[0][0]))
    lines.append(
        f"Delete or move these step folders (e.g. `mv {example} {example}.damaged`) to start training from "
        "scratch, or put back good copies."
    )
    if any(reason.startswith("Orbax cannot restore") for _, reason in skipped):
        lines.append(
            "A step without a checksum that Orbax cannot restore may instead have been written with a "
            "different config: check the reasons above."
        )
    return "\n".join(lines)


def save_tree(path: str, tree: Any) -> None:
    """Writes a pytree of arrays to `path` (a new folder) with Orbax, synchronously."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.abspath(path), tree)


def load_tree(path: str, abstract_tree: Any | None = None) -> Any:
    """Reads a pytree written by `save_tree` (into `abstract_tree`'s structure when given)."""
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(os.path.abspath(path), abstract_tree)


CONFIG_FILE = "config.json"
HISTORY_KEY = "history"  # The run's starts, kept in a training workdir's config.json (`run_config`).


def save_config(directory: str, config: ml_collections.ConfigDict) -> None:
    """Writes `config` as JSON to `directory/config.json`."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        f.write(config.to_json(indent=2))


def load_config(directory: str) -> ml_collections.ConfigDict:
    """Reads `directory/config.json` back (JSON lists become tuples, as in the config files), without
    the run's start history that training keeps there (`run_config`)."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {directory} a mer_jax training workdir or export?")
    with open(path) as f:
        stored = json.load(f)
    stored.pop(HISTORY_KEY, None)
    return ml_collections.ConfigDict(_lists_to_tuples(stored))


def _lists_to_tuples(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _lists_to_tuples(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return tuple(_lists_to_tuples(v) for v in tree)
    return tree
