"""The stages' reports (core/reporting.py) sent to the run's counter actor (progress.py).

Sent without waiting for an answer, except the one question a decode task asks; a lost
report costs a figure on the screen, never a batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ray

from ..core.reporting import BatchTimes

if TYPE_CHECKING:
    from ray.actor import ActorHandle


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
