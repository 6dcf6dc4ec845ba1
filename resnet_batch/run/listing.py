"""Listing directories in Ray tasks, lazily, and counting what a walk finds in an output.

A directory (or bucket prefix) is never listed into the driver: a walk fans out one small
Ray task per sub-directory and yields each directory's images as it is listed (Ray Data
passes them on in blocks of up to 128 MiB), so the only per-image state is in the
workers, never in the driver. Checking the output against a walked directory walks it
again and compares path hashes (pathset.py), counting as it goes: a local directory in
the calling process, an object-store prefix in Ray tasks.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator

import numpy as np
import pyarrow as pa
import ray

from ..core.columns import PATH
from ..core.pathset import drop_listed, isin_sorted, path_hashes
from ..core.storage import is_local
from ..data.sources import Level, conform, list_directory_level

MAX_LISTINGS_IN_FLIGHT = 32  # concurrent directory listings per walk, at most one per CPU


# Listing is I/O bound and must never queue behind the decode tasks that consume what it
# yields, so it asks for no CPU; in-flight listings are bounded per walk instead.
@ray.remote(num_cpus=0, max_retries=3)
def _list_level(uri: str) -> Level:
    return list_directory_level(uri)


def walk(root: str) -> Iterator[Level]:
    """The images under `root` (tar shards expanded), one table per listed directory.

    Breadth-first: the root in this process (a flat folder starts no other worker process,
    which a small job would wait for), its sub-directories several at once by Ray tasks on
    any node: wide trees list in parallel, and what waits is only directory names. Each
    listing in flight is a worker process, hence the bound by the cluster's CPUs.
    """
    level = list_directory_level(root)
    yield level
    in_flight = int(min(MAX_LISTINGS_IN_FLIGHT, max(2, ray.cluster_resources().get("CPU", 2))))
    queue, pending = deque(level.subdirs), deque()
    while queue or pending:
        while queue and len(pending) < in_flight:
            pending.append(_list_level.remote(queue.popleft()))
        # In submission order, not completion order: a retried read task must yield the
        # same blocks in the same order, or Ray's generator replay would skip the wrong ones.
        level = ray.get(pending.popleft())
        queue.extend(level.subdirs)
        yield level


def walk_here(root: str) -> Iterator[Level]:
    """The same walk in this process, one directory after another (local disks)."""
    queue = deque([root])
    while queue:
        level = list_directory_level(queue.popleft())
        queue.extend(level.subdirs)
        yield level


# Read tasks of the pipeline's datasource: here, so that their workers import this light
# module and not the model code.
def read_slice(ref) -> Iterator[pa.Table]:
    yield ray.get(ref)


def read_directory(root: str, skip_ref, schema: pa.Schema, progress) -> Iterator[pa.Table]:
    skip = ray.get(skip_ref)
    for level in walk(root):
        table = drop_listed(level.table, skip)
        if table.num_rows:
            progress.add_listed.remote(table.num_rows)
            yield conform(table, schema)
    progress.walk_finished.remote(root)


def count_against(root: str, excluded: np.ndarray, done_before: np.ndarray,
                  written: np.ndarray) -> tuple[int, int, int, int]:
    """(inputs under root, of which done before this run, of which without an output row,
    hidden entries left out).

    `excluded` holds the hashes of paths listed elsewhere (counted there, not here).
    """
    inputs = done = missing = hidden = 0
    for level in walk_here(root) if is_local(root) else walk(root):
        hidden += level.hidden
        hashes = path_hashes(level.table.column(PATH).to_pylist())
        hashes = hashes[~isin_sorted(hashes, excluded)]
        inputs += len(hashes)
        done += int(isin_sorted(hashes, done_before).sum())
        missing += int((~isin_sorted(hashes, written)).sum())
    return inputs, done, missing, hidden
