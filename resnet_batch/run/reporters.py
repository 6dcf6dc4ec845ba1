"""What a person sees of a running job: a Snapshot of its progress, shown as a bar in a
terminal (redrawn every second) or as a log line every few seconds elsewhere."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

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
        if not _total_known(s):  # inputs still being listed: no total, no percentage
            listed = f" of {s.total}+ listed so far" if s.total >= max(s.done, 1) else " so far"
            self.emit(f"{s.phase}: {s.done} images{listed}, {s.saved} saved, {_errors(s.errors)}, {_rate(s)}")
            return
        self.emit(
            f"{s.phase}: {s.done}/{s.total} images ({100 * s.done / max(s.total, 1):.1f}%), {s.saved} saved, "
            f"{_errors(s.errors)}, {_rate(s)}{_eta(s)}"
        )

    def close(self) -> None:
        pass


class BarReporter:
    """A bar for a person's terminal, redrawn every second from the latest snapshot: the
    phase in words, done / total, the clock from the process's launch (it runs whatever
    the job is doing), and the rate and ETA of the steady phase (none until there is one)."""

    REDRAW_S = 0.25  # a frame every quarter second: the clock shows every second even when one is late

    def __init__(self, stream: TextIO, launched: float):
        from tqdm import tqdm

        class Bar(tqdm):  # tqdm's bar and terminal handling; every figure after the bar is ours
            counts = ""

            @property
            def format_dict(self):
                return {**super().format_dict, "counts": self.counts}

        self.launched = launched
        self.bar = Bar(
            total=1, file=stream, dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {counts}"
        )
        self.last = Snapshot(0, 0, 0, True, 0, 0.0, phase="starting")
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self._draw()
        self.ticker = threading.Thread(target=self._tick, daemon=True, name="resnet-batch-bar")
        self.ticker.start()

    def __call__(self, s: Snapshot) -> None:
        self.last = s
        self._draw()

    def _tick(self) -> None:
        while not self.stopped.wait(self.REDRAW_S):
            self._draw()

    def _draw(self) -> None:
        with self.lock:
            if self.stopped.is_set() and self.bar.disable:
                return
            s = self.last
            self.bar.total, self.bar.n = max(s.total, s.done, 1), s.done
            self.bar.set_description_str(s.phase, refresh=False)
            self.bar.counts = bar_counts(s, time.time() - self.launched)
            self.bar.refresh()

    def close(self) -> None:
        self.stopped.set()
        self.ticker.join(timeout=2)
        self._draw()
        with self.lock:
            self.bar.close()


def _total_known(s: Snapshot) -> bool:
    """Every input is listed: what walks and listing tasks count until then is a lower bound."""
    return not s.walking and s.total >= s.done


def bar_counts(s: Snapshot, elapsed_s: float) -> str:
    """The bar's text after it: "done/total [clock<ETA, rate] errors, saved"."""
    total = str(s.total) if _total_known(s) else (f"{s.total}+" if s.total >= s.done else "?")
    eta = _clock((s.total - s.done) / s.steady_rate) if _eta(s) and _total_known(s) else "?"
    rate = f"{s.steady_rate:.1f} img/s" if s.steady_rate else "? img/s"
    return f"{s.done}/{total} [{_clock(elapsed_s)}<{eta}, {rate}] {_errors(s.errors)}, {s.saved} saved"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _errors(n: int) -> str:
    return f"{n} error{'' if n == 1 else 's'}"


def _rate(s: Snapshot) -> str:
    return f"{s.steady_rate:.1f} images/s" if s.steady_rate else "rate not yet known"


def _eta(s: Snapshot) -> str:
    if s.walking or not s.steady_rate or s.done >= s.total:
        return ""
    return f", ETA {(s.total - s.done) / s.steady_rate:.0f}s"
