"""Host I/O overlapped with the device: reading the next video and writing results in threads.

`prefetch` decodes the next video's frames while the current one is propagated; `Writer` encodes
and writes result PNGs (and overlays) while the next video is read and propagated. JPEG/PNG
coding in OpenCV and Pillow releases the GIL, so the threads run beside the device work. Errors
raised in a thread are raised again in the caller.
"""

import concurrent.futures
import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

Item = TypeVar("Item")

_DONE = object()


def prefetch(items: Iterable[Item], depth: int = 1) -> Iterator[Item]:
    """Yields the items of `items` in order, producing up to `depth` of them ahead in a thread.

    An exception raised while producing an item is raised here, at that item. Closing the
    iterator early stops the thread after the item it is producing.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((_DONE, None))
        except BaseException as error:  # noqa: BLE001  (re-raised in the consumer)
            ready.put((_DONE, error))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()


class Writer:
    """Runs write jobs in `workers` background threads; a context manager that, on exit, waits
    for every job and raises the first job's error.

    At most `max_pending` jobs are queued or running: `submit` waits for the oldest beyond that,
    so the results held for writing stay bounded when writing is slower than producing.
    Usage: `with Writer() as writer: writer.submit(vos.write_masks, folder, video, masks)`.
    """

    def __init__(self, workers: int = 2, max_pending: int = 4):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="writer")
        self._jobs: list[concurrent.futures.Future] = []
        self._max_pending = max_pending

    def submit(self, fn: Callable[..., object], *args) -> None:
        """Queues fn(*args); a finished job's error is raised at the next submit or at exit."""
        while self._jobs and (self._jobs[0].done() or len(self._jobs) >= self._max_pending):
            self._jobs.pop(0).result()
        self._jobs.append(self._pool.submit(fn, *args))

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            for job in self._jobs:
                if exc_info[0] is None:
                    job.result()
                else:
                    job.cancel()
        finally:
            self._pool.shutdown(wait=True)
