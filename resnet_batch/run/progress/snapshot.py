"""A running job's progress in one record, the words the job and its displays share: the job
makes Snapshots (watch.py), a Reporter shows them: LogReporter as a log line every few
seconds (a job's default), the command line's bar in a terminal (cli/progress_bar.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Reporter = Callable[["Snapshot"], None]  # what a label run tells of its progress, a few times a second


@dataclass(frozen=True)
class Snapshot:
    done: int  # images through the model in this run
    saved: int  # of which in complete part files
    total: int  # images to do: listed, plus found so far while walking
    walking: bool  # True while directories are still being walked (total may grow)
    errors: int
    elapsed_s: float
    phase: str = "labeling"  # what the job is doing now, as a person would say it
    steady_rate: float = 0.0  # images/s of the steady phase (0 until it has lasted STEADY_AFTER_S)

    @classmethod
    def before(cls, phase: str) -> Snapshot:
        """Before the pipeline counts anything: the phase alone, the total unknown."""
        return cls(done=0, saved=0, total=0, walking=True, errors=0, elapsed_s=0.0, phase=phase)


class LogReporter:
    """One line every `every_s` seconds (for logs and pipes, where a bar would be noise).

    Lines go to `emit` (default: this module's logger, at INFO)."""

    def __init__(self, every_s: float = 30.0, emit: Callable[[str], None] | None = None):
        self.every_s = every_s
        self.emit = emit or log.info
        self.last = time.monotonic()
        self.said_final = False

    def __call__(self, s: Snapshot) -> None:
        final = not s.walking and s.total > 0 and s.saved >= s.done >= s.total  # always said, once: all saved
        if final and self.said_final:
            return
        if time.monotonic() - self.last < self.every_s and not final:
            return
        self.last, self.said_final = time.monotonic(), final
        if not total_known(s):  # inputs still being listed: no total, no percentage
            listed = f" of {s.total}+ listed so far" if s.total >= max(s.done, 1) else " so far"
            self.emit(f"{s.phase}: {s.done} images{listed}, {s.saved} saved, {errors_text(s.errors)}, {rate_text(s)}")
            return
        self.emit(
            f"{s.phase}: {s.done}/{s.total} images ({100 * s.done / max(s.total, 1):.1f}%), {s.saved} saved, "
            f"{errors_text(s.errors)}, {rate_text(s)}{eta_text(s)}"
        )

    def close(self) -> None:
        pass


def total_known(s: Snapshot) -> bool:
    """Every input is listed: what walks and listing tasks count until then is a lower bound."""
    return not s.walking and s.total >= s.done


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def errors_text(n: int) -> str:
    return f"{n} error{'' if n == 1 else 's'}"


def rate_text(s: Snapshot) -> str:
    return f"{s.steady_rate:.1f} images/s" if s.steady_rate else "rate not yet known"


def eta_text(s: Snapshot) -> str:
    if s.walking or not s.steady_rate or s.done >= s.total:
        return ""
    return f", ETA {(s.total - s.done) / s.steady_rate:.0f}s"
