"""Save stage: finished model blocks -> part files, at least every `checkpoint_every` seconds.

The driver receives references to the model stage's output blocks (never their rows) and
groups them; a group goes to a write task once it holds `rows_per_file` rows or its oldest
block has waited `checkpoint_every` seconds. So a killed job loses at most that much work,
whatever the file size, and an interrupted one saves what it holds first. A write task
writes its group as complete part files (writer.OutputDir: atomic, named by their paths).

Nothing touches the output before the first group is saved: `OutputDir.begin` (which
applies --mode and records the run) runs then, so a job that fails before writing any row
leaves the output as it found it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import ray

from ..core.columns import with_run_metadata
from ..core.storage import retrying
from ..output.record import RunRecord
from ..output.writer import OutputDir, WriteStats

log = logging.getLogger(__name__)

MAX_WRITES_IN_FLIGHT = 4  # beyond this the driver waits: bounds what waits in the object store


@dataclass(frozen=True)
class BlockPart:
    """A finished block, or the slice [start, start + rows) of it."""

    ref: ray.ObjectRef
    rows: int
    start: int | None = None


def _tables(parts: list[BlockPart], blocks: list[pa.Table]) -> list[pa.Table]:
    return [b if p.start is None else b.slice(p.start, p.rows) for p, b in zip(parts, blocks, strict=False)]


# Encoding and upload are I/O and compression: like reading, writing must not wait behind
# decode tasks for a CPU while finished rows pile up.
@ray.remote(num_cpus=0, max_retries=3)
def _write_task(
    out: OutputDir, schema: pa.Schema, rows_per_file: int, parts: list[BlockPart], *blocks: pa.Table
) -> WriteStats:
    tables = _tables(parts, list(blocks))
    return retrying(lambda: out.write_tables(tables, schema, rows_per_file), f"writing to {out.uri}")


class Saver:
    def __init__(
        self,
        out: OutputDir,
        schema: pa.Schema,
        rows_per_file: int,
        checkpoint_every_s: float,
        mode: str,
        record: RunRecord,
    ):
        self.out, self.schema, self.rows_per_file = out, schema, rows_per_file
        self.record = record  # what begin() records; completed as the run learns what ran
        self.checkpoint_every_s = checkpoint_every_s
        self.mode = mode  # applied to the output once, before the first write (OutputDir.begin)
        self.begun = False
        self.buffer: list[BlockPart] = []
        self.buffered_rows = 0
        self.oldest = 0.0
        self.in_flight: dict[ray.ObjectRef, int] = {}
        self.stats = WriteStats()
        self.while_waiting: Callable[[float], None] = lambda waited_s: None  # told each second the writes hold it

    @property
    def saved(self) -> int:
        return self.stats.rows

    def record_what_ran(self, actors: tuple) -> None:
        """The run's metadata with what the model actors resolved (device, precision) and the
        library versions, in the footers of the part files still to be written and in the
        run record."""
        if not actors:
            return
        self.record = dataclasses.replace(
            self.record,
            ran=[json.loads(r) for r in sorted({json.dumps(a, sort_keys=True) for a in actors})],
            precision=",".join(sorted({a["precision"] for a in actors})),
            device=",".join(sorted({a["device"] for a in actors})),
            versions={
                "ray": ray.__version__,
                "torch": ",".join(sorted({a["torch"] for a in actors})),
                "torchvision": ",".join(sorted({a["torchvision"] for a in actors})),
            },
        )
        self.schema = with_run_metadata(self.schema, self.record.to_json())
        if self.begun:
            self.out.record_run(self.record)

    def add(self, part: BlockPart) -> None:
        if not self.buffer:
            self.oldest = time.monotonic()
        self.buffer.append(part)
        self.buffered_rows += part.rows
        if self.buffered_rows >= self.rows_per_file:
            self.flush()

    def tick(self) -> None:
        """Save a group that has waited long enough; collect finished writes."""
        if self.buffer and time.monotonic() - self.oldest >= self.checkpoint_every_s:
            self.flush()
        self._collect(timeout=0)

    def flush(self) -> None:
        if not self.buffer:
            return
        self.ensure_begun()
        parts, self.buffer, self.buffered_rows = self.buffer, [], 0
        if self.out.driver_only:  # memory:// lives in this process only
            self.stats.add(
                self.out.write_tables(_tables(parts, ray.get([p.ref for p in parts])), self.schema, self.rows_per_file)
            )
            return
        waiting_since = time.monotonic()
        while len(self.in_flight) >= MAX_WRITES_IN_FLIGHT:
            if not self._collect(timeout=1.0):
                self.while_waiting(time.monotonic() - waiting_since)
        ref = _write_task.remote(self.out, self.schema, self.rows_per_file, parts, *[p.ref for p in parts])
        self.in_flight[ref] = sum(p.rows for p in parts)

    def ensure_begun(self) -> None:
        if not self.begun:
            self.out.begin(self.mode, self.record)
            self.begun = True

    def finish(self, timeout_s: float | None = None) -> WriteStats:
        """Save everything held and wait for the writes (at most `timeout_s`)."""
        self.flush()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.in_flight:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._collect(timeout=left) and left == 0.0:
                log.warning("%d part files still being written were abandoned", len(self.in_flight))
                break
        return self.stats

    def _collect(self, timeout: float | None) -> int:
        if not self.in_flight:
            return 0
        ready, _ = ray.wait(
            list(self.in_flight), num_returns=1 if timeout is None else len(self.in_flight), timeout=timeout
        )
        for ref in ready:
            # Fetched before it leaves in_flight: a signal raises Interrupted inside ray.get,
            # and a write dropped from in_flight uncounted would be on disk but never "saved".
            # A failed write leaves it, or the save on stop would raise its error a second time.
            try:
                stats = ray.get(ref)
            except ray.exceptions.RayError:
                del self.in_flight[ref]
                raise
            del self.in_flight[ref]
            self.stats.add(stats)
        return len(ready)
