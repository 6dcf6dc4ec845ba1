"""What a person sees in a terminal, and where everything else goes.

By default the process's own stdout and stderr (file descriptors 1 and 2) go to a log file:
Ray's Python and C++ log lines and the worker output it forwards land there, whoever
prints them, and so do the tool's own INFO lines. The tool writes to copies of the original
descriptors: warnings, a progress bar (a terminal) or a progress line every few seconds
(a pipe or a file), and the summary. `-v` leaves the descriptors alone and logs at DEBUG.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..core.errors import Interrupted

if TYPE_CHECKING:
    from types import FrameType


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _BarSafeHandler(logging.StreamHandler):
    """Log lines printed above a progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(printable(self.format(record)), file=self.stream)
        except Exception:  # logging must never raise into the job
            self.handleError(record)


def default_log_path(command: str) -> str:
    folder = os.path.join(tempfile.gettempdir(), "resnet-batch", "logs")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


class Console:
    """Opened by main() and closed before it returns, leaving the process's descriptors and
    logging as it found them (main() can run again in the same process)."""

    def __init__(self, command: str, verbose: bool):
        self.verbose = verbose
        self.log_path: str | None = None
        self._saved_fds: tuple[int, int] | None = None
        self._attached: list[tuple[logging.Logger, logging.Handler]] = []
        self._root_level = logging.getLogger().level
        if verbose:
            self.out, self.err = sys.stdout, sys.stderr
            self._log_everything_to(sys.stderr, logging.DEBUG)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        # As Python's own stderr: a character the terminal's encoding lacks never raises.
        self.out = os.fdopen(os.dup(1), "w", buffering=1, errors="backslashreplace")
        self.err = os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace")
        self.log_path = default_log_path(command)
        self._saved_fds = (os.dup(1), os.dup(2))
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        self._log_everything_to(sys.stderr, logging.INFO)  # -> the log file
        handler = _BarSafeHandler(self.err)
        handler.setLevel(logging.WARNING)  # the start-up details are in the log file
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        self._attach(logging.getLogger("resnet_batch"), handler)  # and propagates to the log file

    def _log_everything_to(self, stream, level: int) -> None:
        """As logging.basicConfig: only where the process has not set up logging itself."""
        root = logging.getLogger()
        if not root.handlers:
            handler = logging.StreamHandler(stream)
            handler.setFormatter(logging.Formatter(FORMAT))
            self._attach(root, handler)
            root.setLevel(level)

    def _attach(self, logger: logging.Logger, handler: logging.Handler) -> None:
        logger.addHandler(handler)
        self._attached.append((logger, handler))

    def print(self, line: str = "", error: bool = False) -> None:
        print(printable(line), file=self.err if error else self.out, flush=True)

    @contextmanager
    def progress(self, every_s: float, launched: float):
        """A progress reporter for run_label: a bar in a terminal, log lines elsewhere."""
        from ..run.progress.snapshot import LogReporter
        from .progress_bar import BarReporter

        reporter: BarReporter | LogReporter
        if self.err.isatty():
            reporter = BarReporter(self.err, launched)
        else:
            reporter = LogReporter(
                every_s, emit=lambda line: self.print(f"{time.strftime('%H:%M:%S')} {line}", error=True)
            )
        try:
            yield reporter
        finally:
            reporter.close()

    @contextmanager
    def row_progress(self, what: str, every_s: float = 5.0):
        """A callback(done, total) for a pass over an output's rows: a bar in a terminal,
        else a line every `every_s` seconds."""
        if self.err.isatty():
            from tqdm import tqdm

            bar = tqdm(desc=what, unit=" rows", file=self.err, dynamic_ncols=True)

            def bar_report(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                yield bar_report
            finally:
                bar.close()
            return
        last = [0.0]

        def report(done: int, total: int) -> None:
            if time.monotonic() - last[0] >= every_s or done == total:
                last[0] = time.monotonic()
                self.print(f"{time.strftime('%H:%M:%S')} {what}: {done}/{total} rows read", error=True)

        yield report

    def has_logs(self) -> bool:
        return self.log_path is not None and os.path.getsize(self.log_path) > 0

    def failed(self, message: str) -> None:
        """One line for the person, and where the full logs are when there are any."""
        where = f" (logs: {self.log_path})" if self.has_logs() else ""
        self.print(f"resnet-batch: error: {message}{where}", error=True)

    def close(self) -> None:
        for logger, handler in self._attached:
            logger.removeHandler(handler)
        logging.getLogger().setLevel(self._root_level)
        if self._saved_fds is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, saved in enumerate(self._saved_fds, start=1):
                os.dup2(saved, fd)
                os.close(saved)
            for stream in (self.out, self.err):
                try:
                    stream.close()
                except BrokenPipeError:  # `| head` read what it wanted: a normal end
                    pass
        if self.log_path and not self.has_logs():
            os.remove(self.log_path)


def printable(line: str) -> str:
    """A line a UTF-8 terminal takes: a name's undecodable bytes (surrogates) as \\xNN."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@contextmanager
def raising_on_signals():
    """SIGINT and SIGTERM raise Interrupted in the main thread, so the job saves and stops
    cleanly; the handlers found are put back on the way out. Only the first one raises: the
    stop it starts saves what is finished (at most 30 s) and says how many rows the output
    holds, and a second signal, raised in the middle of that, would cut the save short and
    make the count a guess."""

    def stopping(signum: int, frame: FrameType | None):
        pass

    def handler(signum: int, frame: FrameType | None):
        for each in (signal.SIGINT, signal.SIGTERM):
            signal.signal(each, stopping)
        Interrupted.last_signum = signum
        raise Interrupted(signum)

    found = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, previous in found.items():
            signal.signal(signum, previous)


def print_table(console: Console, table: Sequence[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell; the last one, often long, as it is."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        console.print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip())
