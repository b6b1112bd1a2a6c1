"""Evaluation over every device of a run: videos split over the local devices and the processes
of a `jax.distributed` job, one result per video, gathered in video order.

Video i goes to device i mod D of `jax.devices()` (the D devices of all processes, in JAX's
global order, the same list on every process), so the partition is a function of the video's
index alone and every process agrees on it without talking. A process walks the videos in order
in one thread and hands its own ones, still unread, to one worker thread per local device; a
worker reads and processes its share with that device as JAX's default device
(`jax.default_device`), so every computation its encoder and propagator dispatch runs there,
and the workers overlap (JAX releases the GIL while a device computes). A video is processed
whole, on one device, by the code a one-device run uses, so its outputs (masks, per-video
scores) are those of a one-device run. The per-video results of all processes are then
exchanged (`multihost_utils.process_allgather` of their pickled bytes, which is also the
barrier after which every process has written its files), so each process holds them all, in
video order, and merged numbers are computed from them as a one-device run computes them. With
one device in all, everything runs in the calling thread, as before this module existed.
"""

import pickle
import queue
import threading
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

Video = TypeVar("Video")
Result = TypeVar("Result")

_QUEUE_DEPTH = 2  # Videos handed to a worker ahead of the one it processes (still unread).
_POLL_S = 0.1  # How often a blocked hand-over checks whether the run has stopped.
_DONE = object()


class Share(NamedTuple):
    """One local device's part of a run.

    Attributes:
      device: the device its videos run on.
      label: appended to its progress bars' titles: '' with one device in all, else
        ' [<device>]' or ' [process p of P, <device>]'.
    """

    device: jax.Device
    label: str


def run_devices() -> list[jax.Device]:
    """Every device of the run (all processes'), in JAX's global order: the slots of `device_of`."""
    return jax.devices()


def device_of(index: int, devices: Sequence[jax.Device]) -> jax.Device:
    """The device video `index` runs on: devices[index mod len(devices)] (round robin)."""
    return devices[index % len(devices)]


def _label(device: jax.Device) -> str:
    if jax.process_count() == 1:
        return f" [{device}]"
    return f" [process {jax.process_index()} of {jax.process_count()}, {device}]"


def map_videos(
    readers: Iterable[Callable[[], Video]],
    work: Callable[[Share, Iterator[Video]], Iterable[Result]],
) -> list[Result]:
    """Runs `work` on every video, each video on its device (`device_of`); returns all results.

    Every process of the run must call this with the same videos in the same order.

    Args:
      readers: one function per video, in the run's order, that reads it (called with no
        argument, only for this process's videos, in its device's worker).
      work: (share, the share's videos in order, read lazily) -> one result per video, in the
        same order. Called once per local device, in a thread of its own with that device as
        JAX's default device; with several processes the results must be picklable.

    Returns:
      Every video's result, in the order of `readers`, on every process.

    Raises:
      The first error raised by a reader or by `work`; RuntimeError when `work` returns a
      result count other than its video count, or the processes walked different videos.
    """
    devices = run_devices()
    if len(devices) == 1:
        return list(work(Share(devices[0], ""), (read() for read in readers)))
    local, count = _run_local_shares(readers, work, devices)
    if jax.process_count() > 1:
        local = _allgather(local)
    if sorted(local) != list(range(count)):
        raise RuntimeError(
            f"process {jax.process_index()} walked {count} videos but the processes returned results for "
            f"{len(local)}: every process must read the same data (the same folders and the same --config)"
        )
    return [local[index] for index in range(count)]


def _run_local_shares(
    readers: Iterable[Callable[[], Video]],
    work: Callable[[Share, Iterator[Video]], Iterable[Result]],
    devices: Sequence[jax.Device],
) -> tuple[dict[int, Result], int]:
    """({video index: result} of this process's videos, the number of videos walked)."""
    local = [device for device in devices if device.process_index == jax.process_index()]
    queues = {device: queue.Queue(maxsize=_QUEUE_DEPTH) for device in local}
    stop = threading.Event()  # Set at the first error: every thread then ends.
    errors: list[BaseException] = []
    results: dict[int, Result] = {}
    count = 0

    def hand_over(videos: queue.Queue, item) -> None:
        while not stop.is_set():
            try:
                videos.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def dispatch() -> None:
        nonlocal count
        try:
            for index, read in enumerate(readers):
                count = index + 1
                device = device_of(index, devices)
                if device in queues:
                    hand_over(queues[device], (index, read))
                if stop.is_set():
                    return
        except BaseException as error:  # noqa: BLE001  (raised again by the caller)
            errors.append(error)
            stop.set()
        finally:
            for videos in queues.values():
                hand_over(videos, _DONE)

    def share_videos(videos: queue.Queue, indices: list[int]) -> Iterator[Video]:
        while True:
            try:
                item = videos.get(timeout=_POLL_S)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is _DONE:
                return
            index, read = item
            indices.append(index)
            yield read()

    def run_share(device: jax.Device) -> None:
        indices: list[int] = []
        try:
            with jax.default_device(device):
                outputs = list(work(Share(device, _label(device)), share_videos(queues[device], indices)))
            if stop.is_set():
                return
            if len(outputs) != len(indices):
                raise RuntimeError(f"work returned {len(outputs)} results for {len(indices)} videos on {device}")
            results.update(zip(indices, outputs))
        except BaseException as error:  # noqa: BLE001  (raised again by the caller)
            errors.append(error)
            stop.set()

    threads = [threading.Thread(target=dispatch, name="videos", daemon=True)]
    threads += [threading.Thread(target=run_share, args=(d,), name=f"videos-{d}", daemon=True) for d in local]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stop.set()
    if errors:
        raise errors[0]
    return results, count


def _allgather(local: dict[int, Result]) -> dict[int, Result]:
    """The union of every process's {video index: result} (a collective: every process calls it)."""
    payload = np.frombuffer(pickle.dumps(local, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([payload.size], np.int32)))[:, 0]  # [P]
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: payload.size] = payload
    gathered = np.asarray(multihost_utils.process_allgather(padded))  # [P, max size]
    merged: dict[int, Result] = {}
    for process, size in enumerate(sizes):
        merged.update(pickle.loads(gathered[process, : int(size)].tobytes()))
    return merged
