"""A label run: what it holds while it runs, where its wall time went, and what it did (the
command line shows it: cli/summary_text.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config.label_config import LabelConfig
    from .progress.snapshot import Reporter
    from .saving import Saver


@dataclass
class LabelRun:
    """What a label run holds while it runs: its arguments, where it reports, its timeline,
    and what saves its rows."""

    cfg: LabelConfig
    report: Reporter
    timeline: Timeline
    saver: Saver


STEADY_MIN_S = 1.0  # a steady phase shorter than this gives no rate (a few batches over milliseconds)


@dataclass
class Timeline:
    """Wall-clock marks of one run (time.time()); 0 = did not happen."""

    launched: float
    executing: float = 0.0  # the pipeline starts: imports, weights, Ray and listing are behind
    first_batch: float = 0.0  # the first block out of the model
    last_batch: float = 0.0
    first_batch_rows: int = 0
    check_s: float = 0.0  # the final exactly-once check (part of shutdown)
    ended: float = 0.0  # everything saved and checked, Ray stopped
    actor_phases: list = field(default_factory=list)  # each model actor's start (model/phases.py)
    decoding: dict = field(default_factory=dict)  # how decoding was shared (run/progress/decode_share.py)
    placements: list = field(default_factory=list)  # each model actor's node id and GPU ids
    labeled: int = 0  # rows through the model, a block redone after a lost node counted again

    def phases(self, until: float = 0.0) -> dict[str, float]:
        """Seconds of start-up, first batch, steady and shutdown; they add up to the wall
        time (to `until`, before the run has ended)."""
        ended = until or self.ended
        executing = self.executing or ended
        first = self.first_batch or executing
        last = self.last_batch or first
        return {
            "start-up": executing - self.launched,
            "first batch": first - executing,
            "steady": last - first,
            "shutdown": ended - last,
        }

    def steady_rate(self, processed: int) -> float:
        """Images/s of the steady phase: the rows after the first batch, over the seconds from
        the first batch to the last (0 when it lasted under STEADY_MIN_S). The one definition
        the summary, the run record and the report show."""
        steady = self.last_batch - self.first_batch
        return (processed - self.first_batch_rows) / steady if self.first_batch and steady >= STEADY_MIN_S else 0.0

    @property
    def wall_s(self) -> float:
        return self.ended - self.launched


@dataclass
class LabelSummary:
    weights: str  # as resolved: the torchvision enum name for DEFAULT, else what was given
    inputs: int
    already_done: int
    processed: int
    rows_in_output: int
    timeline: Timeline
    errors: Counter = field(default_factory=Counter)
    missing: int = 0
    duplicates: int = 0
    hidden: int = 0  # hidden entries the directory walks left out (not inputs)
    misnamed: list = field(default_factory=list)  # part files not named as the writer names them (copies?)
    errors_before: Counter = field(default_factory=Counter)  # error rows among those done before (resume)
    outside: int = 0  # rows of the output whose inputs this run does not list (--add-to-output)

    @property
    def steady_images_per_s(self) -> float:
        """Between the first and the last model batch (Timeline.steady_rate); 0 when there was none."""
        return self.timeline.steady_rate(self.processed)

    @property
    def images_per_s(self) -> float:
        return self.processed / self.timeline.wall_s if self.timeline.wall_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.rows_in_output >= self.inputs
