"""Thin Orbax wrapper: restore-or-init of the train state, periodic saves, exported trees and the
run's config saved beside them."""

import json
import os
from typing import Any, Callable

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Sharding


def with_sharding(abstract_tree: Any, sharding: Sharding) -> Any:
    """Gives every leaf of an abstract pytree (ShapeDtypeStructs) the same sharding."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_tree)


class Checkpointer:
    """Saves the train state under `directory/<step>` (asynchronously) and restores the latest.

    A save is atomic (Orbax writes to a temporary folder and renames it), so a run killed at any
    moment leaves only complete checkpoints.
    """

    def __init__(self, directory: str, *, max_to_keep: int):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(os.path.expanduser(directory)),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_or_init(self, init_fn: Callable[[], Any], abstract_state: Any) -> Any:
        """The latest checkpoint restored into `abstract_state`'s shapes/shardings, else init_fn()."""
        step = self.manager.latest_step()
        if step is None:
            return init_fn()
        logging.info("Restoring checkpoint of step %d from %s", step, self.manager.directory)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def save(self, step: int, state: Any) -> None:
        """Starts an asynchronous save of `state` as `step` (a no-op if that step exists)."""
        if step not in self.manager.all_steps():
            self.manager.save(step, args=ocp.args.StandardSave(state))

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def save_tree(path: str, tree: Any) -> None:
    """Writes a pytree of arrays to `path` (a new folder) with Orbax, synchronously."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.abspath(path), tree)


def load_tree(path: str, abstract_tree: Any | None = None) -> Any:
    """Reads a pytree written by `save_tree` (into `abstract_tree`'s structure when given)."""
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(os.path.abspath(path), abstract_tree)


CONFIG_FILE = "config.json"


def save_config(directory: str, config: ml_collections.ConfigDict) -> None:
    """Writes `config` as JSON to `directory/config.json`."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        f.write(config.to_json(indent=2))


def load_config(directory: str) -> ml_collections.ConfigDict:
    """Reads `directory/config.json` back (JSON lists become tuples, as in the config files)."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {directory} a mer_jax training workdir or export?")
    with open(path) as f:
        return ml_collections.ConfigDict(_lists_to_tuples(json.load(f)))


def _lists_to_tuples(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _lists_to_tuples(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return tuple(_lists_to_tuples(v) for v in tree)
    return tree
