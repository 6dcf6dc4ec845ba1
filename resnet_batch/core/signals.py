"""Signals held back while a block runs: a job's stop must not land inside a step that must
finish (a save's last check, Ray's own stop)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def signals_deferred(redeliver: bool = True) -> Iterator[list[int]]:
    """SIGINT and SIGTERM wait until the block ends, then reach the handlers they would have
    (with `redeliver=False`: are dropped, the block itself being the stop they ask for).

    A job's handlers raise; raised inside ray.shutdown(), that would leave the processes
    after the interrupted one running, orphaned, once the driver exits; raised inside a C
    call (pyarrow, numpy) it surfaces as a SystemError.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {
        s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught and redeliver:
            signal.raise_signal(caught[0])
