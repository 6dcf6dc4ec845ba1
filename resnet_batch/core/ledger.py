"""The run's book of inputs, for one hash bucket: which inputs were listed, which the
output already had, which were handed to the pipeline, and what the output holds at the end.

An input is its 128-bit path hash (pathset.py). Every listing of an input is a *claim*
with a position: where that entry lies among everything listed (its read unit's index and
its rank in the unit, run/listing.py). The first claim of a hash owns it, and only the owner's rows go on:
- a path listed twice (in one manifest, in two, or by a manifest and a walk) is labeled once;
- a read task that is retried claims the same positions again and gets the same answer,
  so a replayed block holds the same rows.
Claims are held as sorted runs, merged as they grow (a log-structured set): 24 bytes an
input, searched with numpy. A job spreads its buckets over actors (run/bookkeeping.py),
so no process holds every input.
"""

from __future__ import annotations

import numpy as np

from .pathset import EMPTY, HASH_DTYPE, isin_sorted


def bucket_of(hashes: np.ndarray, buckets: int) -> np.ndarray:
    """Which of `buckets` each hash belongs to, from its first two bytes (hashes are uniform)."""
    raw = hashes.view(np.uint8).reshape(-1, 16)[:, :2].astype(np.int64)
    return (raw[:, 0] * 256 + raw[:, 1]) * buckets // 65536


class Ledger:
    def __init__(self):
        self.done = EMPTY  # sorted hashes of the rows the output held before this run (repeats kept)
        self._done_chunks: list[np.ndarray] = []
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, owner positions), largest first
        self.inputs = 0  # distinct inputs claimed
        self.already_done = 0  # of which the output held a row before this run
        self.repeated = 0  # entries that named an input another entry owns
        self._written: list[np.ndarray] = []
        self.hidden: dict[str, int] = {}  # hidden entries each walk left out

    def add_done(self, hashes: np.ndarray) -> None:
        """Rows the output held before this run (all are added before the first claim)."""
        self._done_chunks.append(hashes)

    def seal_done(self) -> None:
        self.done = np.sort(np.concatenate([self.done, *self._done_chunks]))
        self._done_chunks = []

    def forget_claims(self) -> None:
        """Start the claims again, keeping the rows done before: a resume counts what it has
        left with the same claims its pipeline then makes, and a folder that changed between
        the two (an image added, so every later rank moves) must not read as repeats."""
        self.runs, self.inputs, self.already_done, self.repeated = [], 0, 0, 0

    def repeated_done(self) -> np.ndarray:
        """The inputs the output held more than one row of before this run (once each)."""
        done = self.done
        return np.unique(done[1:][done[1:] == done[:-1]])

    def claim(self, hashes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Which entries go to the pipeline: those that own their input (first claimed, at
        this position) and whose input the output did not hold before."""
        order = np.argsort(hashes, kind="stable")  # equal hashes keep their entry order
        sorted_hashes, sorted_positions = hashes[order], positions[order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = sorted_hashes[1:] != sorted_hashes[:-1]
        unique, at = sorted_hashes[first], sorted_positions[first]
        owner = self._owners(unique)
        new = owner < 0
        self._add_run(unique[new], at[new])
        before = isin_sorted(unique, self.done)
        self.inputs += int(new.sum())
        self.already_done += int((new & before).sum())
        mine = owner == at
        self.repeated += len(hashes) - len(unique) + int((~new & ~mine).sum())
        goes = np.zeros(len(hashes), dtype=bool)
        goes[order[first]] = (new | mine) & ~before
        return goes

    def _owners(self, hashes: np.ndarray) -> np.ndarray:
        """The owning position of each (sorted, distinct) hash, -1 where none claimed it."""
        owner = np.full(len(hashes), -1, dtype=np.int64)
        for run, positions in self.runs:
            if not len(run):
                continue
            at = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            hit = run[at] == hashes
            owner[hit] = positions[at[hit]]
        return owner

    def _add_run(self, hashes: np.ndarray, positions: np.ndarray) -> None:
        """Keep runs at least twice the size of the next: O(log n) runs, each entry merged O(log n) times."""
        if not len(hashes):
            return
        self.runs.append((hashes, positions))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            small, big = self.runs.pop(), self.runs.pop()
            self.runs.append(_merge(big, small))

    def add_written(self, hashes: np.ndarray) -> None:
        """Rows of part files written during this run, read back from the output."""
        self._written.append(hashes)

    def set_hidden(self, walk: str, count: int) -> None:
        self.hidden[walk] = count

    def tally(self, with_done: bool = True) -> dict:
        """The exactly-once counts: inputs, of which done before, of which without a row;
        rows in the output (the rows done before, unless the output was read back whole),
        and rows beyond the first for the same path."""
        written = np.sort(np.concatenate([self.done if with_done else EMPTY, *self._written]).astype(HASH_DTYPE))
        distinct = np.unique(written)
        missing = sum(int((~isin_sorted(run, distinct)).sum()) for run, _ in self.runs)
        done = np.unique(self.done)
        claimed_done = sum(int(isin_sorted(run, done).sum()) for run, _ in self.runs)
        return {
            "outside": len(done) - claimed_done,  # inputs the output held a row of, that this run does not list
            "inputs": self.inputs,
            "already_done": self.already_done,
            "missing": missing,
            "rows": len(written),
            "duplicates": len(written) - len(distinct),
            "repeated": self.repeated,
            "hidden": sum(self.hidden.values()),
        }


def _merge(big: tuple[np.ndarray, np.ndarray], small: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs with no hash in common as one: linear, not a sort."""
    at = np.searchsorted(big[0], small[0]) + np.arange(len(small[0]))
    theirs = np.ones(len(big[0]) + len(small[0]), dtype=bool)
    theirs[at] = False
    merged = [np.empty(len(theirs), dtype=big[i].dtype) for i in (0, 1)]
    for i in (0, 1):
        merged[i][at], merged[i][theirs] = small[i], big[i]
    return merged[0], merged[1]
