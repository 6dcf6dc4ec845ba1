"""A model actor's start, phase by phase, and when its first block came and went.

Torch-free: the actor starts the clock before it imports torch, and the driver reads the
result (summary, log) without importing anything heavy.
"""

from __future__ import annotations

import time

PHASES = ("imports", "CUDA init", "build", "warm-up")  # in the order an actor runs them
EVENTS = ("first block in", "first forward out")


class PhaseClock:
    def __init__(self):
        self.started = time.time()
        self.last = self.started
        self.seconds: dict[str, float] = {}
        self.at: dict[str, float] = {}  # wall-clock time of each of EVENTS

    def done(self, phase: str) -> None:
        now = time.time()
        self.seconds[phase] = now - self.last
        self.last = now

    def mark(self, event: str) -> bool:
        """Note `event`'s time the first time it happens; True then."""
        if event in self.at:
            return False
        self.at[event] = time.time()
        return True

    def report(self) -> dict:
        return {"started": self.started, "seconds": dict(self.seconds), "at": dict(self.at)}


def describe(report: dict, launched: float) -> str:
    """One line: each phase's seconds, then when (from the job's launch) the actor started,
    was ready, and had its first block in and its first forward out."""
    seconds = report.get("seconds", {})
    parts = [f"{p} {seconds[p]:.1f}s" for p in PHASES if p in seconds]
    ready = report["started"] + sum(seconds.values())
    at = [f"started +{report['started'] - launched:.1f}s", f"ready +{ready - launched:.1f}s"]
    at += [f"{e} +{report['at'][e] - launched:.1f}s" for e in EVENTS if e in report.get("at", {})]
    return ", ".join(parts) + "; " + ", ".join(at)
