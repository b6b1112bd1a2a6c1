"""Background reading and writing: order, bounded work in flight, errors raised in the caller."""

import threading
import time

import pytest

from mer_jax.evaluation import background


def test_prefetch_yields_every_item_in_order_produced_ahead_in_a_thread():
    produced_by = []

    def items():
        for i in range(5):
            produced_by.append(threading.current_thread().name)
            yield i

    assert list(background.prefetch(items(), depth=2)) == [0, 1, 2, 3, 4]
    assert set(produced_by) == {"prefetch"}


def test_prefetch_raises_the_producers_error_at_its_item():
    def items():
        yield 0
        raise OSError("frame 3 is unreadable")

    stream = background.prefetch(items())
    assert next(stream) == 0
    with pytest.raises(OSError, match="frame 3 is unreadable"):
        next(stream)


def test_closing_prefetch_early_stops_the_producer():
    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    stream = background.prefetch(items(), depth=1)
    assert next(stream) == 0
    stream.close()
    time.sleep(0.5)
    assert len(produced) <= 4  # The item taken, the one queued, the one waiting to be queued.


def test_writer_runs_every_job_and_bounds_the_jobs_in_flight():
    running, most = [0], [0]
    lock = threading.Lock()
    done = []

    def job(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        done.append(i)

    with background.Writer(workers=2, max_pending=3) as writer:
        for i in range(10):
            writer.submit(job, i)
            assert len(writer._jobs) <= 3
    assert sorted(done) == list(range(10)) and most[0] <= 2


def test_writer_raises_a_jobs_error_on_exit():
    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with background.Writer() as writer:
            writer.submit(fail)
