"""An exclusive lock on a training workdir, held for a whole run.

Each process of a run holds `<workdir>/lock.<process index>.json` (host, pid, the process's start
time, the lock's creation time); the file is created with O_EXCL, so of two runs started on one
workdir exactly one gets it and the other stops at once, naming the holder. A lock left by a
killed run is stale and is taken over: on the same host when its process is gone (or its pid now
belongs to another process), on another host when its heartbeat (the file's modification time,
refreshed at every log step) is older than `stale_after_s`.
"""

import json
import os
import socket
import time
import uuid

from absl import logging

_DEFAULT_STALE_AFTER_S = 600.0


class WorkdirLockedError(RuntimeError):
    """Another live run holds the workdir."""


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat), None if unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start_time: str | None) -> bool:
    """Whether `pid` runs and is still the process that took the lock (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Exists, owned by another user.
    current = _process_start_time(pid)
    return start_time is None or current is None or current == start_time


class WorkdirLock:
    """Context manager: `with WorkdirLock(workdir, process_index): ...` holds the lock.

    Args:
      workdir: the run's directory (created if missing).
      process_index: this process's index in a multi-process run (each holds its own file).
      stale_after_s: a lock from another host whose heartbeat is older than this is stale.
    """

    def __init__(self, workdir: str, process_index: int = 0, stale_after_s: float = _DEFAULT_STALE_AFTER_S):
        self.path = os.path.join(workdir, f"lock.{process_index}.json")
        self.stale_after_s = stale_after_s
        pid = os.getpid()
        self.info = {
            "host": socket.gethostname(),
            "pid": pid,
            "process_start_time": _process_start_time(pid),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "token": uuid.uuid4().hex,
        }

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Takes the lock, taking over a stale one; raises WorkdirLockedError if a live run holds it."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.info, f)
            return
        raise WorkdirLockedError(f"could not take the lock {self.path}: other runs keep taking it")

    def _take_over_if_stale(self) -> None:
        """Moves a stale lock aside (atomically, so one of several contenders wins), else raises."""
        holder, age = self._read_holder()
        if holder is None:
            return  # Released meanwhile: retry.
        same_host = holder.get("host") == self.info["host"]
        pid = holder.get("pid")
        if same_host and isinstance(pid, int):
            stale = not _alive(pid, holder.get("process_start_time"))
            why = f"process {pid} on this host is gone"
        else:
            stale = age > self.stale_after_s
            why = f"no heartbeat from host {holder.get('host')} for {age:.0f} s"
        if not stale:
            who = (
                f"process {pid} on host {holder['host']} (since {holder.get('created')})"
                if holder
                else "a starting run"
            )
            raise WorkdirLockedError(
                f"{os.path.dirname(self.path)} is in use by {who}: wait for that run to end or use another "
                f"--workdir. If that process is gone, delete {self.path}."
            )
        aside = f"{self.path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # Another contender moved it first: retry.
        os.remove(aside)
        logging.warning("Took over the stale lock %s (%s)", self.path, why)

    def _read_holder(self) -> tuple[dict | None, float]:
        """(holder's info or {} if unreadable, seconds since its heartbeat); (None, 0) if gone."""
        try:
            age = time.time() - os.path.getmtime(self.path)
            with open(self.path) as f:
                return json.load(f), age
        except FileNotFoundError:
            return None, 0.0
        except (OSError, ValueError):
            return {}, age  # Half-written by a killed run: judged by its age alone.

    def heartbeat(self) -> None:
        """Marks the lock as alive (for runs on other hosts judging staleness)."""
        os.utime(self.path)

    def release(self) -> None:
        """Removes the lock if it is still this run's."""
        holder, _ = self._read_holder()
        if holder is not None and holder.get("token") == self.info["token"]:
            os.remove(self.path)
