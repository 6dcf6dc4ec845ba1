"""The driver's view of a running pipeline: a Snapshot for the reporters (snapshot.py),
the phase in words, the steady rate, what the job waits for when it cannot go on, and the
warnings the stages' reports call for."""

from __future__ import annotations

import logging
import time
from typing import Protocol

import ray

from ...config.plan import PoolNeeds
from .counter import Counts
from .resources import nodes_being_added, short_of
from .snapshot import Snapshot

log = logging.getLogger(__name__)

STEADY_AFTER_S = 5.0  # a rate over less time than this, after the first rows, says little
STALL_S = 20.0  # no row through the model for this long: say what the job waits for
RESOURCE_POLL_S = 5.0


class Polled(Protocol):
    """What RunWatch asks of the counter (counter.CounterClient): its counts, never waiting."""

    def poll(self, wait: bool = False) -> Counts: ...


class RunWatch:
    """The driver's view of a running pipeline: a Snapshot for the reporters, the phase in
    words, and what the job waits for when it cannot go on.

    A job waits when the cluster lacks what a model actor needs (its CPU, and a GPU on GPU
    clusters) or, once actors hold theirs, what decode tasks need (1 CPU). Until
    `needs.wait_limit_s` it says so in the phase; then `check()` raises ResourcesUnavailable.
    """

    def __init__(self, counter: Polled, walks: int, needs: PoolNeeds):
        self.counter, self.walks, self.needs = counter, walks, needs
        self.started = self.last_change = time.monotonic()
        self.first_at = 0.0
        self.first_done = 0
        self.last_done = 0
        self.last_labeled = 0  # rows through the model, as the counter last said (redone blocks again)
        self.waiting: str | None = None
        self.waiting_since = 0.0
        self._resources_at = 0.0
        self.device_path_errors_told: set[str] = set()

    def snapshot(self, received: int, saved: int, walking: bool | None = None, errors: int | None = None) -> Snapshot:
        """`errors`: the exact count, once the saver has it (the counter's may miss the last batches')."""
        counts = self.counter.poll(wait=walking is False)  # the last one: exact
        self.last_labeled = counts.labeled
        now = time.monotonic()
        walking = counts.walks_done < self.walks if walking is None else walking
        total = counts.listed
        # Only rows the driver holds count: a stop saves each of them (pipeline.py), so the
        # bar never shows a row that a stop would lose.
        done = received
        if done > self.last_done:
            self.last_done, self.last_change = done, now
            if not self.first_at:
                self.first_at, self.first_done = now, done
        # From the first rows on, not counting them: they arrive in one lump after the start-up.
        lasted = now - self.first_at if self.first_at else 0.0
        steady = (done - self.first_done) / lasted if lasted >= STEADY_AFTER_S and done > self.first_done else 0.0
        self._update_waiting(counts, now)
        self._tell_device_path_failures(counts)
        return Snapshot(
            done=done,
            saved=saved,
            total=total,
            walking=walking,
            errors=counts.errors if errors is None else errors,
            elapsed_s=now - self.started,
            phase=self._phase(counts, done, walking),
            steady_rate=steady,
        )

    def _phase(self, counts: Counts, done: int, walking: bool) -> str:
        if self.waiting:
            return self.waiting
        actors = self.needs.actors
        if not counts.actors and not done:
            return f"starting {actors} model actor{'s' if actors > 1 else ''} (0/{actors} ready)"
        if not done:
            return "listing" if walking else f"first batch ({min(len(counts.actors), actors)}/{actors} actors ready)"
        return "labeling"

    def _tell_device_path_failures(self, counts: Counts) -> None:
        """One warning per distinct reason a model actor's GPU decoding failed its check."""
        for where, error in counts.device_path_failures:
            if error not in self.device_path_errors_told:
                self.device_path_errors_told.add(error)
                log.warning(
                    "GPU decoding failed its check on %s: %s; that model actor decodes JPEGs on its CPU "
                    "for the rest of the job",
                    where,
                    error,
                )

    def _update_waiting(self, counts: Counts, now: float) -> None:
        stalled = now - self.last_change >= STALL_S
        if not stalled:
            self.waiting = None
            return
        if now - self._resources_at < RESOURCE_POLL_S:
            return
        self._resources_at = now
        waiting = short_of(
            ray.cluster_resources(),
            ray.available_resources(),
            counts.placed,
            self.needs.gpus_per_actor,
            self.needs.cpus_per_actor,
        )
        growing = nodes_being_added() if waiting else 0
        if waiting and growing:  # an autoscaler is adding nodes: worth the wait, not counted against the limit
            waiting += f"; the autoscaler is adding {growing} node{'s' if growing > 1 else ''}"
            self.waiting_since = now
        elif waiting:
            waiting += "; no node is being added"
            if not self.waiting or "autoscaler" in self.waiting:
                self.waiting_since = now
        if waiting and waiting != self.waiting:
            log.warning("%s", waiting)
        self.waiting = waiting

    def check(self) -> None:
        """Raise ResourcesUnavailable once the job has waited `needs.wait_limit_s` for resources."""
        from ...core.errors import ResourcesUnavailable

        if self.waiting and time.monotonic() - self.waiting_since >= self.needs.wait_limit_s:
            raise ResourcesUnavailable(
                f"{self.waiting}; gave up after {self.needs.wait_limit_s:.0f} s (--wait-for-resources)"
            )
