"""Sets of paths as sorted 128-bit hashes: 16 bytes per path wherever a set must be held
(the rows already written, the inputs the driver listed), searched with numpy.

128 bits make the identity of an input collision-free in practice: the chance that any two
of a billion paths share a hash is ~1e-21 (64 bits: ~3e-2), and a collision could mark an
input as done on resume. The hashes are fixed 16-byte strings (numpy "S16"), which sort,
search and compare bytewise, as one 128-bit number would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

HASH_DTYPE = np.dtype("S16")
EMPTY = np.zeros(0, dtype=HASH_DTYPE)


def path_hashes(paths: Iterable[str]) -> np.ndarray:
    """128-bit BLAKE2b of each path."""
    digests = b"".join(hashlib.blake2b(str(p).encode(), digest_size=16).digest() for p in paths)
    return np.frombuffer(digests, dtype=HASH_DTYPE).copy()


def isin_sorted(hashes: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not len(sorted_set) or not len(hashes):
        return np.zeros(len(hashes), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, hashes), len(sorted_set) - 1)
    return sorted_set[at] == hashes
