"""Joining or starting Ray for a job, and stopping the local Ray a job started itself."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

import ray

# Ray's name for the autoscaler monitor among a local node's processes (ray_constants).
MONITOR_PROCESS = "monitor"


def join_or_start(address: str | None) -> bool:
    """Join or start Ray; True when this call started it (and so must stop it)."""
    if ray.is_initialized():
        return False
    in_main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM)
    # The Ray processes a local start spawns inherit an ignored SIGINT: a Ctrl-C in the
    # terminal (sent to the whole foreground process group) must reach this driver only, so
    # that it can save what is done before it stops them.
    sigint = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    try:
        # A Ray we start ourselves runs without the dashboard: on a small machine its
        # processes cost ~2 s of start-up and a few % of throughput (bench/BENCHMARKS.md).
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
    except ValueError:  # joining a running cluster, whose dashboard settings are its own
        ray.init(address=address, logging_level=logging.WARNING)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, sigint)
            signal.signal(signal.SIGTERM, sigterm)  # ray.init replaces it with a bare sys.exit
    return True


def stop() -> None:
    """ray.shutdown(), without the second it spends on the autoscaler monitor.

    Ray stops a local node's processes one after the other, the GCS before the monitor;
    the monitor's SIGTERM handler then tries to report its end to the GCS that is gone and
    is killed a second later. A job's own local Ray has nothing for the autoscaler to wind
    down, so the monitor is killed first (1.3 -> 0.5 s, BENCHMARKS.md). Joined clusters
    are only disconnected from, as before.
    """
    with _signals_deferred():
        node = getattr(ray._private.worker, "_global_node", None)  # None when Ray was joined
        for info in getattr(node, "all_processes", {}).get(MONITOR_PROCESS, []):
            info.process.kill()
        ray.shutdown()


@contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM wait until the block ends, then reach the handlers they would have.

    A job's handlers raise; raised inside ray.shutdown(), that would leave the processes
    after the interrupted one running, orphaned, once the driver exits.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])
