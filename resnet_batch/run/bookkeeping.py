"""The run's books: what was listed, what the output held before, and the exactly-once check.

The ledger (core/ledger.py) is cut into hash buckets, each an actor on the driver's node
(a lost worker node takes none of them with it); read tasks claim the inputs they list
straight with the buckets, so the driver never holds a path or a hash. The output's rows
are read back by tasks too, each hashing a few part files and handing each bucket its
share. A small local resume keeps one bucket in the driver's own process: a finished one
then ends without Ray at all.

    OutputDir -> load_done (parts before the run) -> claims by read tasks (listing.py)
        -> check: the parts written since read back, every bucket tallied
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..core.columns import ERROR, PATH
from ..core.ledger import Ledger, bucket_of
from ..core.pathset import path_hashes
from ..core.storage import is_local
from ..data.input_plan import WALK, InputPlan
from ..output.repair import set_aside_repeats
from ..output.writer import OutputDir
from .listing import count_pending, read_unit

log = logging.getLogger(__name__)

CPUS_PER_BUCKET = 16  # buckets: one per 16 cluster CPUs (claims are cheap; a bucket is a fan-in point)
MAX_BUCKETS = 64
PARTS_PER_TASK = 8  # part files read back (and hashed) by one task
LOCAL_INPUTS = 1_000_000  # the most inputs a resume counts in the driver before it hands the books to Ray
LOCAL_PARTS = 64


@dataclass
class OutputCheck:
    inputs: int = 0
    already_done: int = 0
    rows: int = 0
    missing: int = 0
    duplicates: int = 0
    hidden: int = 0  # entries of walked directories left out for starting with "."
    repeated: int = 0  # entries that named an input listed before (labeled once)
    outside: int = 0  # inputs the output held rows of before this run, that this run does not list


class _Bucket(Ledger):
    """A ledger bucket as an actor, which may start from a ledger the driver filled."""

    def __init__(self, start: Ledger | None = None):
        super().__init__()
        if start is not None:
            self.__dict__.update(start.__dict__)


_BucketActor = ray.remote(num_cpus=0)(_Bucket)


@dataclass
class Books:
    """The buckets: Ray actors, or one Ledger in this process (`local`)."""

    buckets: tuple
    local: bool = False
    loaded: frozenset = field(default_factory=frozenset)  # part files whose rows were loaded as done
    errors_loaded: Counter = field(default_factory=Counter)  # their error rows, by category

    @classmethod
    def in_process(cls) -> Books:
        return cls((Ledger(),), local=True)

    @classmethod
    def on_ray(cls, start: Books | None = None, buckets: int | None = None) -> Books:
        """Actors on this node: `buckets` of them (default: as many as the cluster's CPUs
        ask for), or the driver's one bucket handed over as it stands."""
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        actor = _BucketActor.options(scheduling_strategy=here)
        if start is not None:
            return cls((actor.remote(start.buckets[0]),), loaded=start.loaded, errors_loaded=start.errors_loaded)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = buckets or max(1, min(MAX_BUCKETS, cpus // CPUS_PER_BUCKET))
        return cls(tuple(actor.remote() for _ in range(n)))

    def __reduce__(self):  # what read tasks get: the actor handles
        if self.local:
            raise TypeError("in-process books stay in the driver")
        return Books, (self.buckets, False)

    def _each(self, method: str, hashes: np.ndarray, *more: np.ndarray) -> list:
        """`method` on every bucket with its share; results in bucket order, with the shares."""
        which = bucket_of(hashes, len(self.buckets))
        shares = [np.flatnonzero(which == b) for b in range(len(self.buckets))]
        calls = [self._call(b, method, hashes[s], *(m[s] for m in more)) for b, s in enumerate(shares)]
        return list(zip(shares, calls if self.local else ray.get(calls), strict=False))

    def _call(self, bucket: int, method: str, *args):
        if self.local:
            return getattr(self.buckets[bucket], method)(*args)
        return getattr(self.buckets[bucket], method).remote(*args)

    def claim(self, hashes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        goes = np.zeros(len(hashes), dtype=bool)
        for share, result in self._each("claim", hashes, positions):
            goes[share] = result
        return goes

    def add(self, hashes: np.ndarray, done: bool) -> None:
        self._each("add_done" if done else "add_written", hashes)

    def set_hidden(self, key: str, count: int) -> None:
        self._wait(self._call(0, "set_hidden", key, count))

    def seal_done(self) -> None:
        self._wait(*(self._call(b, "seal_done") for b in range(len(self.buckets))))

    def forget_claims(self) -> None:
        self._wait(*(self._call(b, "forget_claims") for b in range(len(self.buckets))))

    def repeated_done(self) -> np.ndarray:
        found = [self._call(b, "repeated_done") for b in range(len(self.buckets))]
        return np.concatenate(found if self.local else ray.get(found))

    def tally(self, with_done: bool) -> dict:
        tallies = [self._call(b, "tally", with_done) for b in range(len(self.buckets))]
        tallies = tallies if self.local else ray.get(tallies)
        return {k: sum(t[k] for t in tallies) for k in tallies[0]}

    def _wait(self, *results) -> None:
        if not self.local:
            ray.get(list(results))


def _hash_parts(out: OutputDir, parts: list[str], books: Books, done: bool) -> tuple[int, Counter]:
    """Read the `path` and `error` columns of `parts`, hand each bucket its hashes; the rows
    read, and their errors by category."""
    rows, errors = 0, Counter[str]()
    for part in parts:
        with out.fs.open(part, "rb") as f:
            table = pq.read_table(f, columns=[PATH, ERROR])
        books.add(path_hashes(table.column(PATH).to_pylist()), done)
        errors.update(e.split(":", 1)[0] for e in table.column(ERROR).drop_null().to_pylist())
        rows += table.num_rows
    return rows, errors


_hash_parts_task = ray.remote(num_cpus=1, max_retries=3)(_hash_parts)


def read_back(out: OutputDir, parts: list[str], books: Books, done: bool) -> Counter:
    """The rows of `parts` into the books (as done before this run, or as written by it):
    in this process for local books (and memory://, which lives here) and for a single
    task's worth (a task would take longer to start, on a cluster's busy or runtime-env
    workers, than the reading), else in tasks of PARTS_PER_TASK files. Their error rows, by
    category."""
    if books.local or out.driver_only or len(parts) <= PARTS_PER_TASK:
        return _hash_parts(out, parts, books, done)[1]
    groups = [parts[i : i + PARTS_PER_TASK] for i in range(0, len(parts), PARTS_PER_TASK)]
    return sum(
        (errors for _, errors in ray.get([_hash_parts_task.remote(out, g, books, done) for g in groups])), Counter()
    )


def load_done(out: OutputDir, books: Books) -> Books:
    """The rows the output holds before the run, as done (for --mode resume)."""
    parts = out.part_files()
    books.errors_loaded = read_back(out, parts, books, done=True)
    books.seal_done()
    books.loaded = frozenset(parts)
    return books


def load_done_once(out: OutputDir, make_books: Callable[[], Books]) -> Books:
    """load_done, after setting aside the rows beyond the first of any input the output
    holds twice (writer.OutputDir.set_aside_repeats): a resume leaves one row per input."""
    books = load_done(out, make_books())
    repeated = books.repeated_done()
    if not len(repeated):
        return books
    set_aside_repeats(out, repeated)
    return load_done(out, make_books())


def counts_here(plan: InputPlan, out: OutputDir) -> bool:
    """Whether a resume is counted in the driver: no bucket-prefix walks (listing them is
    Ray tasks' work), and an output of at most LOCAL_INPUTS rows in a few files."""
    if any(u.kind == WALK and not is_local(u.source) for u in plan.units):
        return False
    parts = out.part_files()
    if len(parts) > LOCAL_PARTS:
        return False
    rows = 0
    for part in parts:
        with out.fs.open(part, "rb") as f:
            rows += pq.read_metadata(f).num_rows
    return rows <= LOCAL_INPUTS


def count_here(plan: InputPlan, books: Books) -> int | None:
    """The inputs a resume has left, counted in this process; None once the books hold
    more than LOCAL_INPUTS inputs (the rest is Ray's to count)."""
    pending = 0
    for index, unit in enumerate(plan.units):
        for table in read_unit(unit, index, books, plan.schema, here=True):
            pending += table.num_rows
            if books.buckets[0].inputs > LOCAL_INPUTS:
                return None
    return pending


_count_task = ray.remote(num_cpus=1, max_retries=3)(count_pending)


def count_on_ray(plan: InputPlan, books: Books) -> int:
    """The inputs a resume has left, counted by a task per read unit."""
    schema = ray.put(plan.schema)
    return sum(ray.get([_count_task.remote(u, i, books, schema) for i, u in enumerate(plan.units)]))


def check_output(out: OutputDir, books: Books) -> OutputCheck:
    """How many inputs were done before this run, lack a row, or have two: the part files
    written since the start read back (those loaded as done are named by what they hold,
    so they are as loaded while they are there)."""
    parts = out.part_files()
    with_done = books.loaded.issubset(parts)
    if not with_done:
        log.warning("part files present at the start are gone: the whole output is read back")
    read_back(out, [p for p in parts if not (with_done and p in books.loaded)], books, done=False)
    return OutputCheck(**books.tally(with_done))
