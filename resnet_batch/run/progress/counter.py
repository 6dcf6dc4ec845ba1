"""What the stages report while a job runs, gathered where the driver can ask for it.

Read tasks (images found while walking directories), decode tasks (their CPU seconds) and
model actors (rows and errors, device times, their start, placement and failures) report
to a small counter actor through CounterReports, sent without waiting for an answer but
for the one question a decode task asks (a lost report costs a figure on the screen, never
a batch); the driver polls it through CounterClient, never blocking its loop. watch.py
turns the counts into a Snapshot for the reporters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ...core.reporting import BatchTimes
from .decode_share import DecodeShare

if TYPE_CHECKING:
    from ray.actor import ActorHandle


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
        actor_class: Any = ProgressCounter  # an actor class, which Ray's type stubs do not say
        self.actor = actor_class.options(scheduling_strategy=here, max_restarts=-1).remote()
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


class CounterReports:
    """DecodeReporter and ModelReporter over the counter actor's handle (picklable: each
    decode task and model actor holds a copy)."""

    def __init__(self, counter: ActorHandle):
        self.counter = counter

    def cpu_decode_share(self) -> float:
        try:
            share: Any = ray.get(self.counter.cpu_decode_share.remote(), timeout=5)  # a float, from the actor
            return float(share)
        except (ray.exceptions.RayError, TimeoutError):
            return 0.0  # the device decodes what the cores do not

    def cpu_decoded(self, images: int, seconds: float) -> None:
        self.counter.add_cpu_decode.remote(images, seconds)

    def actor_placed(self, where: str) -> None:
        context = ray.get_runtime_context()  # in the actor: its node and the GPUs Ray gave it
        self.counter.actor_placed.remote(
            where, {"node": context.get_node_id(), "gpus": list(context.get_accelerator_ids().get("GPU", []))}
        )

    def actor_ready(self, actor_id: str, resolved: dict, phases: dict | None = None) -> None:
        self.counter.actor_ready.remote(actor_id, resolved, phases)

    def start_failed(self, failure: Exception) -> None:
        self.counter.start_failed.remote(failure)

    def rows_finished(self, rows: int, errors: int) -> None:
        self.counter.add_labeled.remote(rows, errors)

    def batch_times(self, times: BatchTimes) -> None:
        self.counter.add_device_times.remote(times)

    def device_path_failed(self, where: str, error: str) -> None:
        self.counter.device_path_failed.remote(where, error)
