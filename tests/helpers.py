"""What several test modules share beyond fixtures: the command line as a subprocess, a
free port, and a reporter that records what the stages tell the job, in memory, in place
of the run's counter actor."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from resnet_batch.core.reporting import BatchTimes

RESNET_BATCH = [sys.executable, "-m", "resnet_batch"]  # the command, as this interpreter runs it


def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`resnet-batch ARGS...` in a process of its own, this environment plus `env`."""
    return subprocess.run(
        [*RESNET_BATCH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def ray_processes_of(pid: int) -> list[str]:
    """The processes of the Ray session a job (by its pid) started, by their command lines."""
    return subprocess.run(["pgrep", "-f", f"session_.*_{pid}"], capture_output=True, text=True).stdout.split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingReporter:
    """core.reporting's DecodeReporter and ModelReporter, keeping every call."""

    def __init__(self, share: float = 0.0):
        self.share = share
        self.calls: list[tuple] = []

    def _record(self, *call) -> None:
        self.calls.append(call)

    def named(self, method: str) -> list[tuple]:
        return [call[1:] for call in self.calls if call[0] == method]

    def cpu_decode_share(self) -> float:
        return self.share

    def cpu_decoded(self, images: int, seconds: float) -> None:
        self._record("cpu_decoded", images, seconds)

    def actor_placed(self, where: str) -> None:
        self._record("actor_placed", where)

    def actor_ready(self, actor_id: str, resolved: dict, phases: dict | None = None) -> None:
        self._record("actor_ready", actor_id, resolved, phases)

    def start_failed(self, failure: Exception) -> None:
        self._record("start_failed", failure)

    def rows_finished(self, rows: int, errors: int) -> None:
        self._record("rows_finished", rows, errors)

    def batch_times(self, times: BatchTimes) -> None:
        self._record("batch_times", times)

    def device_path_failed(self, where: str, error: str) -> None:
        self._record("device_path_failed", where, error)
