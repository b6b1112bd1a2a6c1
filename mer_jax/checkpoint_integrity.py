"""Integrity of checkpoint step folders: checksums (the size and SHA-256 of every file a save wrote, recorded
by that save just before Orbax commits the folder, compared with the files on disk before a restore), and
setting aside folders found damaged."""

import hashlib
import json
import os
from typing import NamedTuple

CHECKSUM_FILE = "mer_checksum.json"
# Orbax rewrites this step-level file while committing (it adds the commit time), after the checksum is
# written; it holds bookkeeping only, and a damaged copy does not stop a restore.
_REWRITTEN_AT_COMMIT = frozenset({"_CHECKPOINT_METADATA"})
_FORMAT = 1


class Verdict(NamedTuple):
    """What the files of a step folder say about it.

    Attributes:
        problem: why the folder must not be restored (damaged or not a checkpoint); None if it may be.
        verified: True if every file matched a checksum written when the folder was saved.
    """

    problem: str | None
    verified: bool


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(step_dir: str) -> list[str]:
    """Paths of the files below `step_dir`, relative to it with '/' separators, sorted."""
    found = []
    for root, _, names in os.walk(step_dir):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), step_dir).replace(os.sep, "/"))
    return sorted(f for f in found if f != CHECKSUM_FILE and f not in _REWRITTEN_AT_COMMIT)


def write_checksum(step_dir: str) -> None:
    """Writes `step_dir/mer_checksum.json`: {"format", "files": {relative path: {"size", "sha256"}}} of every
    file below `step_dir` except those Orbax rewrites at commit."""
    files = {}
    for name in _files(step_dir):
        path = os.path.join(step_dir, name)
        files[name] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    temporary = os.path.join(step_dir, CHECKSUM_FILE + ".tmp")
    with open(temporary, "w") as f:
        json.dump({"format": _FORMAT, "files": files}, f, indent=1)
    # Complete or absent, never half-written: a reader must not mistake a torn file for damage.
    os.replace(temporary, os.path.join(step_dir, CHECKSUM_FILE))


def verify(step_dir: str, item: str) -> Verdict:
    """Compares the files of `step_dir` with its checksum file; `item` is the subfolder every step holds.

    Sizes are compared before contents so that a truncated file is named as such. Files not listed (written
    by Orbax after the checksum) are not checked. A folder without a checksum file is not a problem in itself
    (a checkpoint written before checksums existed): it is returned unverified.
    """
    if not os.path.isdir(step_dir):
        return Verdict("not a folder", verified=False)
    if not os.path.isdir(os.path.join(step_dir, item)):
        contents = sorted(os.listdir(step_dir))
        return Verdict("empty folder" if not contents else f"no '{item}' in it (holds {', '.join(contents)})", False)
    checksum_path = os.path.join(step_dir, CHECKSUM_FILE)
    if not os.path.exists(checksum_path):
        return Verdict(None, verified=False)
    try:
        with open(checksum_path) as f:
            listed = json.load(f)["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in listed.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return Verdict(f"unreadable {CHECKSUM_FILE} ({type(e).__name__}: {e}) (damaged)", verified=False)
    for name, (size, _) in expected.items():
        path = os.path.join(step_dir, name)
        if not os.path.isfile(path):
            return Verdict(f"missing file {name} (damaged)", verified=False)
        if os.path.getsize(path) != size:
            actual = os.path.getsize(path)
            return Verdict(f"{name} has {actual} bytes, {size} were written (truncated or damaged)", verified=False)
    for name, (_, digest) in expected.items():
        if _sha256(os.path.join(step_dir, name)) != digest:
            return Verdict(f"checksum mismatch in {name} (damaged)", verified=False)
    return Verdict(None, verified=True)


def set_aside(step_dir: str) -> str:
    """Renames `step_dir` to `<step_dir>.damaged` (`.damaged1`, ... if taken), a name Orbax does not take
    for a step; returns the new path."""
    target, n = f"{step_dir}.damaged", 1
    while os.path.lexists(target):
        target, n = f"{step_dir}.damaged{n}", n + 1
    os.rename(step_dir, target)
    return target
