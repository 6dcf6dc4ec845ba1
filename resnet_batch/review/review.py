"""Reading a labeling run for people: one streaming pass that keeps bounded summaries.

`collect` reads an output's part files a row group at a time and keeps, whatever the
number of rows: counts, errors by category, a histogram of top-1 confidence, per class its
count, mean confidence and the `per_class` least confident rows, the `queue` least
confident rows flagged for review, and the first `max_errors` error rows. Memory is
O(classes x per_class + queue + max_errors), about 200 bytes each, plus one row group.
The report (report.py) and the exports (export.py) are built from it or from the same pass.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow.compute as pc

from ..core.columns import ERROR, MARGIN, NEEDS_REVIEW, PATH, TOPK_LABELS, TOPK_PROBS, error_category
from ..core.errors import UsageError
from ..output.features import batches, open_output
from ..output.record import RunRecord

HISTOGRAM_BINS = 20


@dataclass(order=True)
class Pick:
    """A row kept for people to look at; ordered so that heaps keep the least confident."""

    sort_key: float
    tie: int
    path: str = field(compare=False)
    label: str = field(compare=False)
    prob: float = field(compare=False)


class _Lowest:
    """The `size` items with the lowest key, in a bounded max-heap."""

    def __init__(self, size: int):
        self.size = size
        self.heap: list[tuple] = []

    def offer(self, pick: Pick) -> None:
        item = (-pick.sort_key, -pick.tie, pick)
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, item)
        elif item > self.heap[0]:
            heapq.heapreplace(self.heap, item)

    def sorted(self) -> list[Pick]:
        return sorted(p for _, _, p in self.heap)


@dataclass
class ClassStats:
    name: str
    lowest: _Lowest
    count: int = 0
    prob_sum: float = 0.0

    @property
    def mean_prob(self) -> float:
        return self.prob_sum / self.count if self.count else 0.0


@dataclass
class Review:
    rows: int = 0
    errors: Counter = field(default_factory=Counter)
    error_rows: list[tuple[str, str]] = field(default_factory=list)
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, dtype=np.int64))
    classes: dict[str, ClassStats] = field(default_factory=dict)
    flagged: int = 0  # rows with needs_review (or, without that column, in the queue's sense)
    queue: list[Pick] = field(default_factory=list)
    queue_rule: str = ""
    run: RunRecord = field(default_factory=RunRecord)

    @property
    def labeled(self) -> int:
        return self.rows - sum(self.errors.values())


REVIEW_COLUMNS = [PATH, TOPK_LABELS, TOPK_PROBS, MARGIN, NEEDS_REVIEW, ERROR]


def collect(
    output: str,
    per_class: int = 4,
    queue: int = 200,
    max_errors: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> Review:
    dataset, run = open_output(output)
    if TOPK_LABELS not in dataset.schema.names:
        raise UsageError(f"{output} has no labels (it was written with --top-k 0): nothing to review")
    flagged_column = NEEDS_REVIEW in dataset.schema.names
    review = Review(
        run=run,
        queue_rule=f"needs_review (top-1 probability under {(run.review or {}).get('review_below')})"
        if flagged_column
        else "the least confident rows (no --review-below was given)",
    )
    lowest_queue = _Lowest(queue)
    counter = itertools.count()
    for batch in batches(dataset, REVIEW_COLUMNS, progress):
        review.rows += batch.num_rows
        errors = batch.column(ERROR)
        failed = pc.is_valid(errors)
        for path, error in zip(
            batch.column(PATH).filter(failed).to_pylist(), errors.filter(failed).to_pylist(), strict=False
        ):
            review.errors[error_category(error)] += 1
            if len(review.error_rows) < max_errors:
                review.error_rows.append((path, error))
        ok = batch.filter(pc.invert(failed))
        if not ok.num_rows:
            continue
        labels = pc.list_element(ok.column(TOPK_LABELS), 0).to_pylist()
        probs = pc.list_element(ok.column(TOPK_PROBS), 0).to_numpy(zero_copy_only=False)
        flags = ok.column(NEEDS_REVIEW).to_numpy(zero_copy_only=False) if flagged_column else None
        review.histogram += np.histogram(probs, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0]
        review.flagged += int(flags.sum()) if flags is not None else 0
        for i, (path, label, prob) in enumerate(zip(ok.column(PATH).to_pylist(), labels, probs.tolist(), strict=False)):
            stats = review.classes.get(label)
            if stats is None:
                stats = review.classes[label] = ClassStats(label, _Lowest(per_class))
            stats.count += 1
            stats.prob_sum += prob
            pick = Pick(prob, next(counter), path, label, prob)
            stats.lowest.offer(pick)
            if flags is None or flags[i]:
                lowest_queue.offer(pick)
    review.queue = lowest_queue.sorted()
    if not flagged_column:
        review.flagged = len(review.queue)
    return review
