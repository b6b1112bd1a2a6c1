"""The run's config in `<workdir>/config.json`: checked when a run resumes, with a history of starts.

`config.json` holds the config of the latest start (what export and evaluation read) and, under
"history", one entry per start of the run (time, host, the step it started from, the fields it
changed). A resumed run must continue the same run: fields that change the train state's shape or
the run's meaning stop it, naming each differing field. Operational fields (logging, checkpoint
cadence, reader threads, the dataset's location, evaluations) may change freely, and the length
and numerics of the run (`RESUMABLE_WITH_FLAG`) only with `allow_changes`.
"""

import json
import os
import socket
import time
from typing import Any

import ml_collections

from mer_jax.checkpointing import CONFIG_FILE, HISTORY_KEY

# Fields (or sections, by prefix) that do not change what is trained.
OPERATIONAL = (
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "progress_bar",
    "data.prefetch",
    "data.num_workers",
    "data.data_dir",
    "evals",
    "diagnostics",
)
# Fields that change the schedule or the arithmetic but not the state: allowed with the flag.
RESUMABLE_WITH_FLAG = ("num_train_steps", "num_epochs", "compute_dtype", "remat")
_ABSENT = "<absent>"


class ConfigChangedError(ValueError):
    """A resumed run's config differs from the stored one in fields that must not change."""


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def _matches(field: str, names: tuple[str, ...]) -> bool:
    return any(field == name or field.startswith(name + ".") for name in names)


def differences(stored: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """{field: (stored value, new value)} of the fields whose values differ (JSON forms compared)."""
    old, cur = _flatten(stored), _flatten(new)
    return {
        field: (old.get(field, _ABSENT), cur.get(field, _ABSENT))
        for field in sorted(set(old) | set(cur))
        if old.get(field, _ABSENT) != cur.get(field, _ABSENT)
    }


def read(workdir: str) -> tuple[dict | None, list]:
    """(the stored config as a JSON dict or None if there is none, its history list)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None, []
    with open(path) as f:
        stored = json.load(f)
    return stored, stored.pop(HISTORY_KEY, [])


def check_resume(
    stored: dict, config: ml_collections.ConfigDict, *, allow_changes: bool, path: str
) -> dict[str, tuple[Any, Any]]:
    """The changed fields of a resumed run; raises ConfigChangedError for fields that must not change.

    Args:
      stored: the stored config (`read`).
      config: the new run's config.
      allow_changes: allow the `RESUMABLE_WITH_FLAG` fields to change.
      path: the stored config's file, for the message.
    """
    changed = differences(stored, json.loads(config.to_json()))
    allowed = OPERATIONAL + (RESUMABLE_WITH_FLAG if allow_changes else ())
    refused = {field: values for field, values in changed.items() if not _matches(field, allowed)}
    if refused:
        lines = "\n".join(f"  {field}: {old!r} -> {new!r}" for field, (old, new) in refused.items())
        flag_only = [field for field in refused if _matches(field, RESUMABLE_WITH_FLAG)]
        hint = f"\n{', '.join(flag_only)} may change on resume with --allow_config_change." if flag_only else ""
        raise ConfigChangedError(
            f"this workdir holds a run whose config ({path}) differs from the new one in fields that change the "
            f"train state or the run's meaning:\n{lines}\nResume with the stored values, or start a new run in "
            f"another --workdir.{hint}"
        )
    return changed


def record_start(
    workdir: str, config: ml_collections.ConfigDict, start_step: int, changed: dict, history: list
) -> None:
    """Writes config.json: the new config, with this start appended to the history."""
    entry = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": socket.gethostname(),
        "start_step": start_step,
        "changed": {field: [old, new] for field, (old, new) in changed.items()},
    }
    document = {**json.loads(config.to_json()), HISTORY_KEY: [*history, entry]}
    os.makedirs(workdir, exist_ok=True)
    temporary = os.path.join(workdir, f".{CONFIG_FILE}.tmp")
    with open(temporary, "w") as f:
        json.dump(document, f, indent=2)
    os.replace(temporary, os.path.join(workdir, CONFIG_FILE))  # Never a half-written config.json.
