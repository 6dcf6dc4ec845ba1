"""Progress of a running job: images done / total, images/s, errors so far and ETA.

The pipeline counts images through the model itself (it receives every finished block);
read tasks (images found while walking directories) and model actors (errors) report to a
small counter actor. RunWatch turns both into a Snapshot for the reporters (reporters.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..core.reporting import BatchTimes
from .decode_share import DecodeShare
from .reporters import Snapshot
from .resources import nodes_being_added, short_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Counts:
    """What the counter actor has heard: images found by walks, walks finished, rows
    through the model and error rows among them (per batch), and the model actors that
    are up, each with what it resolved (device, precision, library versions)."""

    listed: int = 0
    walks_done: int = 0
    labeled: int = 0
    errors: int = 0
    actors: tuple = ()
    placed: int = 0  # model actors started (ready or not)
    device_path_failures: tuple = ()  # (where, error) of each actor that decodes on its CPU instead


@ray.remote(num_cpus=0)
class ProgressCounter:
    """Images found by walks, walks finished, and error rows from the model actors (best
    effort: a retried task may count twice)."""

    def __init__(self):
        self.listed = 0
        self.labeled = 0
        self.errors = 0
        self.walked: set[str] = set()
        self.actors: dict[str, dict] = {}
        self.placed: set[str] = set()  # model actors whose constructor has begun (they hold their resources)
        self.placements: dict[str, dict] = {}  # where each is: its node id, the GPU ids Ray gave it
        self.phases: dict[str, dict] = {}  # each model actor's start (model/phases.py)
        self.start_failure: Exception | None = None
        self.device_path_failures: list[tuple[str, str]] = []
        self.decode_share = DecodeShare()

    def share_decoding(self, cores: int, fixed: float | None) -> None:
        self.decode_share = DecodeShare(cores, fixed)

    def add_device_times(self, times: BatchTimes) -> None:
        self.decode_share.add_device_times(times)

    def add_cpu_decode(self, images: int, seconds: float) -> None:
        self.decode_share.add_cpu_decode(images, seconds)

    def cpu_decode_share(self) -> float:
        return self.decode_share.share()

    def decoding(self) -> dict:
        return self.decode_share.describe()

    def add_listed(self, n: int) -> None:
        self.listed += n

    def walk_finished(self, root: str) -> None:
        self.walked.add(root)

    def add_labeled(self, rows: int, errors: int) -> None:
        self.labeled += rows
        self.errors += errors

    def actor_placed(self, actor_id: str, placement: dict | None = None) -> None:
        self.placed.add(actor_id)
        self.placements[actor_id] = placement or {}

    def actor_ready(self, actor_id: str, resolved: dict, phases: dict | None = None) -> None:
        self.actors[actor_id] = resolved
        if phases:
            self.phases[actor_id] = phases

    def actor_phases(self) -> list[dict]:
        return list(self.phases.values())

    def actor_placements(self) -> list[dict]:
        return list(self.placements.values())

    def start_failed(self, failure: Exception) -> None:
        self.start_failure = self.start_failure or failure

    def device_path_failed(self, where: str, error: str) -> None:
        self.device_path_failures.append((where, error))

    def why_start_failed(self) -> Exception | None:
        return self.start_failure

    def get(self) -> Counts:
        return Counts(
            self.listed,
            len(self.walked),
            self.labeled,
            self.errors,
            tuple(self.actors.values()),
            max(len(self.placed), len(self.actors)),
            tuple(self.device_path_failures),
        )


class CounterClient:
    """The driver's view of the counter, polled without ever blocking the driver's loop."""

    def __init__(self):
        # On the driver's node, so losing a worker node does not take progress with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.actor = ProgressCounter.options(scheduling_strategy=here, max_restarts=-1).remote()
        self.counts = Counts()
        self._pending = None

    def poll(self, wait: bool = False) -> Counts:
        """The counts as of the last answer (never waits for the next one, unless `wait`)."""
        if wait:
            try:
                self.counts = ray.get(self.actor.get.remote(), timeout=5)
            except (ray.exceptions.RayError, TimeoutError):
                pass
            return self.counts
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

    def actors(self) -> tuple:
        """What the model actors resolved, asked now (for the run's metadata)."""
        return self.poll(wait=True).actors

    def start_failure(self) -> Exception | None:
        """Why a model actor could not start, as the typed error its constructor raised."""
        try:
            return ray.get(self.actor.why_start_failed.remote(), timeout=10)
        except (ray.exceptions.RayError, TimeoutError):
            return None

    def starts_and_decoding(self) -> tuple[list[dict], dict, list[dict]]:
        """Each model actor's start (model/phases.py), how decoding was shared, and where each
        model actor was placed, asked now."""
        asked = [self.actor.actor_phases.remote(), self.actor.decoding.remote(), self.actor.actor_placements.remote()]
        try:
            return tuple(ray.get(asked, timeout=10))
        except (ray.exceptions.RayError, TimeoutError):
            return [], {}, []

    def close(self) -> None:
        ray.kill(self.actor)


STEADY_AFTER_S = 5.0  # a rate over less time than this, after the first rows, says little
STALL_S = 20.0  # no row through the model for this long: say what the job waits for
RESOURCE_POLL_S = 5.0


class RunWatch:
    """The driver's view of a running pipeline: a Snapshot for the reporters, the phase in
    words, and what the job waits for when it cannot go on.

    A job waits when the cluster lacks what a model actor needs (its CPU, and a GPU on GPU
    clusters) or, once actors hold theirs, what decode tasks need (1 CPU). Until
    `wait_limit_s` it says so in the phase; then `check()` raises ResourcesUnavailable.
    """

    def __init__(
        self,
        counter: CounterClient,
        walks: int,
        actors: int,
        gpus_per_actor: int,
        cpus_per_actor: int,
        wait_limit_s: float,
    ):
        self.counter, self.walks = counter, walks
        self.actors, self.gpus_per_actor, self.cpus_per_actor = actors, gpus_per_actor, cpus_per_actor
        self.wait_limit_s = wait_limit_s
        self.started = self.last_change = time.monotonic()
        self.first_at = 0.0
        self.first_done = 0
        self.last_done = 0
        self.waiting: str | None = None
        self.waiting_since = 0.0
        self._resources_at = 0.0
        self.device_path_errors_told: set[str] = set()

    def snapshot(self, received: int, saved: int, walking: bool | None = None, errors: int | None = None) -> Snapshot:
        """`errors`: the exact count, once the saver has it (the counter's may miss the last batches')."""
        counts = self.counter.poll(wait=walking is False)  # the last one: exact
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
        if not counts.actors and not done:
            return f"starting {self.actors} model actor{'s' if self.actors > 1 else ''} (0/{self.actors} ready)"
        if not done:
            return (
                "listing"
                if walking
                else f"first batch ({min(len(counts.actors), self.actors)}/{self.actors} actors ready)"
            )
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
            ray.cluster_resources(), ray.available_resources(), counts.placed, self.gpus_per_actor, self.cpus_per_actor
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
        """Raise ResourcesUnavailable once the job has waited `wait_limit_s` for resources."""
        from ..core.errors import ResourcesUnavailable

        if self.waiting and time.monotonic() - self.waiting_since >= self.wait_limit_s:
            raise ResourcesUnavailable(
                f"{self.waiting}; gave up after {self.wait_limit_s:.0f} s (--wait-for-resources)"
            )
