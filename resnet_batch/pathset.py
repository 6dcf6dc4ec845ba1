"""Sets of paths as sorted 64-bit hashes: 8 bytes per path wherever a set must be held
(the rows already written, the inputs the driver listed), searched with numpy.

A collision (~1e-19 per pair) could only make two paths look alike; the final check
compares counts as well, so even that cannot hide a missing row.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

EMPTY = np.zeros(0, dtype=np.uint64)


def path_hashes(paths) -> np.ndarray:
    """64-bit BLAKE2b of each path: collisions are ~1e-19 per pair, cheap to store and search."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(p).encode(), digest_size=8).digest(), "little") for p in paths),
        dtype=np.uint64,
    )


def isin_sorted(hashes: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not len(sorted_set) or not len(hashes):
        return np.zeros(len(hashes), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, hashes), len(sorted_set) - 1)
    return sorted_set[at] == hashes


def drop_listed(table: pa.Table, sorted_set: np.ndarray) -> pa.Table:
    """Rows of `table` whose path is not in the sorted hash set."""
    if not len(sorted_set):
        return table
    return table.filter(pa.array(~isin_sorted(path_hashes(table.column("path").to_pylist()), sorted_set)))
