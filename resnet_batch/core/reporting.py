"""What the stages tell the job while they run, as two small typed interfaces.

The decode tasks (data/) and the model actors (model/) report through these; the run layer
implements them over its counter actor (run/progress/counter.py), and a test passes a plain object
that records the calls. Every method is best effort: reporting never fails a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class BatchTimes:
    """One model call's device seconds: the data path of the JPEGs decoded on the device
    (copy in, decode, resize) and the forward of the images it labeled."""

    device_decoded: int
    data_path_s: float
    images: int
    forward_s: float


class DecodeReporter(Protocol):
    def cpu_decode_share(self) -> float:
        """The share of device-decodable JPEGs a decode task decodes on its CPU all the same."""
        ...

    def cpu_decoded(self, images: int, seconds: float) -> None:
        """A decode task's CPU seconds for the JPEGs it decoded in place of the device."""
        ...


class ModelReporter(Protocol):
    def actor_placed(self, where: str) -> None:
        """A model actor's constructor began on `where` (host:pid): it holds its resources."""
        ...

    def actor_ready(self, actor_id: str, resolved: dict, phases: dict | None = None) -> None:
        """What the actor runs with (device, precision, versions) and its start, phase by phase."""
        ...

    def start_failed(self, failure: Exception) -> None:
        """Why a model actor could not start, as the typed error its constructor raises."""
        ...

    def rows_finished(self, rows: int, errors: int) -> None:
        """A batch's rows are labeled, `errors` of them error rows."""
        ...

    def batch_times(self, times: BatchTimes) -> None: ...

    def device_path_failed(self, where: str, error: str) -> None:
        """The device data path failed its check on `where`: that actor decodes on its CPU."""
        ...
