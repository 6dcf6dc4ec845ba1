"""Read tasks: each read unit's entries listed, claimed in the books, passed on.

A directory (or bucket prefix) is never listed into the driver: a walk fans out one small
Ray task per sub-directory and yields each directory's images as it is listed, so the
only per-image state is in the workers. Manifest splits and named files are read by the
tasks the same way (data/input_plan.py); every table a task lists is claimed in the books
(bookkeeping.py) before its rows go on, which is what labels a path listed twice once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa
import ray

from ..core.columns import PATH
from ..core.pathset import path_hashes
from ..data.directories import ListedPage, list_directory
from ..data.input_plan import WALK, InputPlan, ReadUnit, unit_tables
from ..data.sources import conform
from . import ray_compat

if TYPE_CHECKING:
    from ray.actor import ActorHandle


class Claims(Protocol):
    """What listing asks of the run's books (bookkeeping.Books): which of these paths are
    this listing's to pass on, and how many hidden entries a walk left out."""

    def claim(self, hashes: np.ndarray, positions: np.ndarray) -> np.ndarray: ...

    def set_hidden(self, key: str, count: int) -> None: ...


MAX_LISTINGS_IN_FLIGHT = 32  # concurrent directory listings per walk, at most one per CPU
PAGES_AHEAD = 2  # listed pages a directory's listing task keeps ready before the walk takes them


# Listing is I/O bound and must never queue behind the decode tasks that consume what it
# yields, so it asks for no CPU; in-flight listings are bounded per walk instead. Each
# streams its directory's pages, and stops when it is PAGES_AHEAD ahead of the walk.
@ray_compat.streaming_task(ahead=PAGES_AHEAD, num_cpus=0, max_retries=3)
def _list_pages(uri: str) -> Iterator[ListedPage]:
    yield from list_directory(uri)


def walk(root: str) -> Iterator[ListedPage]:
    """The images under `root` (tar shards expanded), a page of a listed directory at a time.

    Breadth-first: the root in this process (a flat folder starts no other worker process,
    which a small job would wait for), its sub-directories several at once by Ray tasks on
    any node: wide trees list in parallel, and what waits is only directory names. Each
    listing in flight is a worker process, hence the bound by the cluster's CPUs.
    """
    queue: deque[str] = deque()
    for level in list_directory(root):
        queue.extend(level.subdirs)
        yield level
    in_flight = int(min(MAX_LISTINGS_IN_FLIGHT, max(2, ray.cluster_resources().get("CPU", 2))))
    pending: deque = deque()
    while queue or pending:
        while queue and len(pending) < in_flight:
            pending.append(_list_pages.remote(queue.popleft()))
        # In submission order, not completion order: a retried read task must yield the
        # same blocks in the same order, or Ray's generator replay would skip the wrong ones.
        for page in pending.popleft():
            level = ray.get(page)
            queue.extend(level.subdirs)
            yield level


def walk_here(root: str) -> Iterator[ListedPage]:
    """The same walk in this process, one directory after another (local disks)."""
    queue = deque([root])
    while queue:
        for level in list_directory(queue.popleft()):
            queue.extend(level.subdirs)
            yield level


def unit_tables_here(unit: ReadUnit) -> Iterator[pa.Table]:
    """A read unit's tables listed in this process, as its read task lists them (a walk one
    directory after another)."""
    return (table for table, _ in _tables(unit, here=True))


def list_here(plan: InputPlan) -> pa.Table:
    """Every input of `plan`, listed in this process by the read units' own listing: for a
    job that needs its inputs before it starts (eval's labels)."""
    tables = [conform(t, plan.schema) for unit in plan.units for t in unit_tables_here(unit)]
    return pa.concat_tables(tables) if tables else plan.schema.empty_table()


POSITION_BITS = 32  # a claim's position: (read unit's index << 32) + the entry's rank in the unit


def read_unit(
    unit: ReadUnit,
    index: int,
    books: Claims,
    schema: pa.Schema,
    progress: ActorHandle | None = None,
    here: bool = False,
) -> Iterator[pa.Table]:
    """The unit's inputs this run labels: each listed entry claimed in the books, the ones
    it owns and the output lacks passed on with `schema`'s columns.

    A retried task lists the same entries at the same positions and so yields the same rows.
    `here`: walk in this process (a local directory, counted by the driver).
    """
    position = index << POSITION_BITS
    hidden = 0
    for table, hidden_here in _tables(unit, here):
        hidden += hidden_here
        hashes = path_hashes(table.column(PATH).to_pylist())
        goes = books.claim(hashes, np.arange(position, position + len(hashes), dtype=np.int64))
        position += len(hashes)
        if goes.any():
            if progress is not None:
                progress.add_listed.remote(int(goes.sum()))
            yield conform(table.filter(pa.array(goes)), schema)
    if unit.kind == WALK:
        books.set_hidden(unit.key, hidden)
    if progress is not None:
        progress.walk_finished.remote(unit.key)


def _tables(unit: ReadUnit, here: bool) -> Iterator[tuple[pa.Table, int]]:
    if unit.kind != WALK:
        yield from ((t, 0) for t in unit_tables(unit))
        return
    for level in walk_here(unit.source) if here else walk(unit.source):
        yield level.table, level.hidden


def count_pending(unit: ReadUnit, index: int, books: Claims, schema: pa.Schema, here: bool = False) -> int:
    """How many of the unit's inputs this run would label (claiming them as the run will)."""
    return sum(t.num_rows for t in read_unit(unit, index, books, schema, here=here))
