"""What several test modules share beyond fixtures: the command line as a subprocess or in
this process, the processes of a job's session, a free port, and a reporter that records
what the stages tell the job, in memory, in place of the run's counter actor."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO
from unittest import mock

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


def in_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`resnet-batch ARGS...` through main() in this process, this environment plus `env`:
    its exit status and what it printed on descriptors 1 and 2, which is what a person sees
    (main() sends the rest to its log file, as the command does). Jobs run on the Ray this
    process is connected to (the suite's, `ray_local`): no interpreter, Ray or worker start.
    Starting and stopping its own Ray, and exiting, are the command's, which `cli` runs."""
    from resnet_batch.cli.main import main

    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        mock.patch.dict(os.environ, env or {}),
    ):
        sys.stdout.flush()
        sys.stderr.flush()
        streams, fds = (sys.stdout, sys.stderr), (os.dup(1), os.dup(2))
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        # As in a process of its own, Python's streams write to the descriptors.
        sys.stdout, sys.stderr = (open(fd, "w", buffering=1, closefd=False) for fd in (1, 2))
        try:
            try:
                code = main(list(args))
            except SystemExit as exit:  # argparse's refusals
                code = exit.code if isinstance(exit.code, int) else 1
        finally:
            sys.stdout.close()
            sys.stderr.close()
            sys.stdout, sys.stderr = streams
            for fd, saved in enumerate(fds, start=1):
                os.dup2(saved, fd)
                os.close(saved)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(list(args), code, out.read(), err.read())


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session, until none is left (30 s at most)."""
    deadline = time.monotonic() + 30
    while left := session_processes(sid):
        for line in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[1]), signal.SIGKILL)
        assert time.monotonic() < deadline, left
        time.sleep(0.1)


def session_processes(sid: int) -> list[str]:
    """Live processes of a session (a job started with start_new_session=True, by its pid), as
    "SID PID STAT COMMAND": its Ray's processes included, whatever names Ray gave its workers."""
    ps = subprocess.run(["ps", "-eo", "sid=,pid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if line.split()[0] == str(sid) and not line.split()[2].startswith("Z")]


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


def scramble_batch_norms(model) -> None:
    """BatchNorm statistics away from random init's 0 and 1, so that a checkpoint, a key
    conversion or the folding of a BatchNorm is seen to carry them."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


def found(pattern: str | re.Pattern, text: str) -> re.Match:
    """The first match of `pattern` in `text`; a test fails saying what was not there."""
    match = re.search(pattern, text)
    assert match is not None, f"{pattern if isinstance(pattern, str) else pattern.pattern!r} not in {text[-2000:]!r}"
    return match


def piped(stream: IO | None) -> IO:
    """A subprocess's pipe (Popen gives one where it was asked for)."""
    assert stream is not None
    return stream
