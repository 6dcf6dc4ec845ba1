"""A running job's Snapshot (run/progress/snapshot.py) as a bar in a person's terminal,
redrawn every second."""

from __future__ import annotations

import threading
import time
from typing import TextIO

from ..run.progress.snapshot import Snapshot, clock, errors_text, eta_text, total_known


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
        self.last = Snapshot.before("starting")
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


def bar_counts(s: Snapshot, elapsed_s: float) -> str:
    """The bar's text after it: "done/total [clock<ETA, rate] errors, saved"."""
    total = str(s.total) if total_known(s) else (f"{s.total}+" if s.total >= s.done else "?")
    eta = clock((s.total - s.done) / s.steady_rate) if eta_text(s) and total_known(s) else "?"
    rate = f"{s.steady_rate:.1f} img/s" if s.steady_rate else "? img/s"
    return f"{s.done}/{total} [{clock(elapsed_s)}<{eta}, {rate}] {errors_text(s.errors)}, {s.saved} saved"
