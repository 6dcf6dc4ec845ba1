"""Progress of a running job: images done / total, images/s, errors so far and ETA.

The pipeline counts images through the model itself (it receives every finished block);
read tasks (images found while walking directories) and model actors (errors) report to a
small counter actor. Reporters show a snapshot: a tqdm bar in a terminal, or one log line
every few seconds elsewhere.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    done: int  # images through the model in this run
    saved: int  # of which in complete part files
    total: int  # images to do: listed, plus found so far while walking
    walking: bool  # True while directories are still being walked (total may grow)
    errors: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@ray.remote(num_cpus=0)
class ProgressCounter:
    """Images found by walks, walks finished, and error rows from the model actors (best
    effort: a retried task may count twice)."""

    def __init__(self):
        self.listed = 0
        self.errors = 0
        self.walked: set[str] = set()

    def add_listed(self, n: int) -> None:
        self.listed += n

    def walk_finished(self, root: str) -> None:
        self.walked.add(root)

    def add_errors(self, n: int) -> None:
        self.errors += n

    def get(self) -> tuple[int, int, int]:
        return self.listed, self.errors, len(self.walked)


class CounterClient:
    """The driver's view of the counter, polled without ever blocking the driver's loop."""

    def __init__(self):
        # On the driver's node, so losing a worker node does not take progress with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.actor = ProgressCounter.options(scheduling_strategy=here, max_restarts=-1).remote()
        self.counts = (0, 0, 0)
        self._pending = None

    def poll(self) -> tuple[int, int, int]:
        """(images found by walks, error rows, walks finished), as of the last answer."""
        if self._pending is not None:
            ready, _ = ray.wait([self._pending], timeout=0)
            if ready:
                try:
                    self.counts = ray.get(ready[0])
                except ray.exceptions.RayError:
                    pass  # progress is best effort: it must never fail the job
                self._pending = None
        if self._pending is None:
            self._pending = self.actor.get.remote()
        return self.counts

    def close(self) -> None:
        ray.kill(self.actor)


class LogReporter:
    """One line every `every_s` seconds (for logs and pipes, where a bar would be noise).

    Lines go to `emit` (default: this module's logger, at INFO)."""

    def __init__(self, every_s: float = 30.0, emit=None):
        self.every_s = every_s
        self.emit = emit or log.info
        self.last = time.monotonic()

    def __call__(self, s: Snapshot) -> None:
        if time.monotonic() - self.last < self.every_s:
            return
        self.last = time.monotonic()
        total = f"{s.total}+" if s.walking else str(s.total)  # + : directories are still being listed
        self.emit(f"progress: {s.done}/{total} images ({100 * s.done / max(s.total, 1):.1f}%), {s.saved} saved, "
                  f"{s.errors} errors, {s.rate:.1f} images/s{_eta(s)}")

    def close(self) -> None:
        pass


class BarReporter:
    """A tqdm bar for a person's terminal: done / total, images/s, errors so far, ETA."""

    def __init__(self, stream):
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="img", file=stream, dynamic_ncols=True, smoothing=0.1,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")

    def __call__(self, s: Snapshot) -> None:
        self.bar.total = max(s.total, s.done)
        self.bar.set_description("walking" if s.walking else "labeling", refresh=False)
        self.bar.set_postfix_str(f"{s.errors} errors, {s.saved} saved", refresh=False)
        self.bar.update(s.done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _eta(s: Snapshot) -> str:
    if s.walking or not s.rate or s.done >= s.total:
        return ""
    return f", ETA {(s.total - s.done) / s.rate:.0f}s"
