"""A label run: what it holds while it runs, where its wall time went, and what it did, as the
lines the CLI prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..model.phases import describe
from ..model.registry import NO_WEIGHTS, RANDOM_WEIGHTS_NOTE

if TYPE_CHECKING:
    from .config import LabelConfig
    from .reporters import Reporter
    from .saving import Saver


@dataclass
class LabelRun:
    """What a label run holds while it runs: its arguments, where it reports, its timeline,
    and its saver once made (a stop says how many rows that saved)."""

    cfg: LabelConfig
    report: Reporter
    timeline: Timeline
    saver: Saver | None = None


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
    decoding: dict = field(default_factory=dict)  # how decoding was shared (run/decode_share.py)
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

    def lines(self) -> list[str]:
        errors = _by_category(self.errors)
        if self.already_done:
            errors += f" in this run; {_by_category(self.errors_before)} among the {self.already_done} rows done before"
        phases = self.timeline.phases()
        steady = f" ({self.steady_images_per_s:.1f} images/s)" if self.steady_images_per_s else ""
        skipped = (
            [
                f"not inputs: {self.hidden} hidden entries (names starting with '.') in the walked folders; "
                "name them as INPUTs or in a manifest to label them"
            ]
            if self.hidden
            else []
        )
        return [
            f"inputs {self.inputs}, already done {self.already_done}, processed {self.processed}, "
            f"rows in output {self.rows_in_output}",
            f"errors: {errors}",
            *skipped,
            f"wall {self.timeline.wall_s:.1f}s = start-up {phases['start-up']:.1f}s + first batch "
            f"{phases['first batch']:.1f}s + steady {phases['steady']:.1f}s{steady} + shutdown "
            f"{phases['shutdown']:.1f}s (final check {self.timeline.check_s:.1f}s); "
            f"{self.images_per_s:.1f} images/s overall",
            f"where the time went: {time_bar(phases)}",
            *self._start_and_decoding(),
            *([f"note: {RANDOM_WEIGHTS_NOTE}"] if self.weights == NO_WEIGHTS else []),
            self._verdict(),
        ]

    def as_json(self, output: str) -> dict:
        """What `label --summary-json FILE` writes, for the pipelines that call this tool."""
        phases = self.timeline.phases()
        return {
            "output": output,
            "complete": self.complete and self.inputs > 0,
            "weights": self.weights,
            "inputs": self.inputs,
            "already_done": self.already_done,
            "processed": self.processed,
            "labeled": self.timeline.labeled,
            "rows_in_output": self.rows_in_output,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "hidden": self.hidden,
            "outside": self.outside,
            "errors": dict(sorted(self.errors.items())),
            "errors_before": dict(sorted(self.errors_before.items())),
            "seconds": {
                "wall": round(self.timeline.wall_s, 3),
                **{name: round(v, 3) for name, v in phases.items()},
                "final check": round(self.timeline.check_s, 3),
            },
            "images_per_s": {"overall": round(self.images_per_s, 2), "steady": round(self.steady_images_per_s, 2)},
        }

    def _verdict(self) -> str:
        if not self.complete:
            copies = (
                (
                    f" (part files not named as resnet-batch names them, copies of others perhaps: "
                    f"{', '.join(self.misnamed[:5])}; move them out of the output)"
                )
                if self.misnamed
                else ""
            )
            return f"INCOMPLETE: {self.missing} inputs without a row, {self.duplicates} duplicate rows{copies}"
        if self.inputs == 0:
            return (
                "WARNING: no inputs: nothing the INPUTs name is an image, a .tar shard or a manifest "
                "(see `resnet-batch label --help` for what is read); nothing was labeled"
            )
        if self.outside:
            return (
                f"complete: every input of this run has exactly one row; the output also holds {self.outside} "
                "rows of inputs this run does not list"
            )
        return "complete: every input has exactly one row"

    def _start_and_decoding(self) -> list[str]:
        """The first model actor's start, phase by phase, and the CPU decode share where the
        device decoded JPEGs."""
        lines, t = [], self.timeline
        if t.labeled > self.processed:  # Ray redid the lost blocks of a node (or a worker) that died
            lines.append(f"redone: {t.labeled - self.processed} rows labeled twice (their first result was lost)")
        if t.placements:
            lines.append(f"model actors placed: {describe_placements(t.placements)}")
        started = [p for p in t.actor_phases if "at" in p]
        if started:
            first = min(started, key=lambda p: p["at"].get("first forward out", float("inf")))
            lines.append(f"model actor start (first of {len(t.actor_phases)}): {describe(first, t.launched)}")
        d = t.decoding
        if d.get("device_decode_ms") is not None:
            lines.append(
                f"decoding: CPU share {d['share']:.2f} ({'fixed' if d['fixed'] else 'auto'}; per image: "
                f"forward {d['forward_ms']} ms and device decode {d['device_decode_ms']} ms on the model's "
                f"device, CPU decode {d['cpu_decode_ms']} ms on one of {d['cores']} cores per model actor)"
            )
        return lines


PHASE_MARKS = {"start-up": ".", "first batch": "-", "steady": "#", "shutdown": "~"}  # in time order


def time_bar(phases: dict[str, float], width: int = 40) -> str:
    """The wall time as a bar, a mark per phase, each as wide as its share:
    `[....------##########~] . start-up - first batch # steady ~ shutdown`."""
    total = sum(max(v, 0.0) for v in phases.values()) or 1.0
    cells = "".join(PHASE_MARKS[name] * round(width * max(seconds, 0.0) / total) for name, seconds in phases.items())
    legend = " ".join(f"{mark} {name}" for name, mark in PHASE_MARKS.items())
    return f"[{cells}] {legend}"


def _by_category(errors: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"


def describe_placements(placements: list[dict]) -> str:
    """ "16 on 2 nodes (8 + 8), holding 16 GPUs": how many model actors, on how many nodes."""
    per_node = Counter(p.get("node") for p in placements)
    gpus = sum(len(p.get("gpus") or ()) for p in placements)
    nodes = f"{len(per_node)} node{'s' if len(per_node) != 1 else ''}"
    held = f", holding {gpus} GPU{'s' if gpus != 1 else ''}" if gpus else ""
    split = f" ({' + '.join(str(n) for n in sorted(per_node.values(), reverse=True))})" if len(per_node) > 1 else ""
    return f"{len(placements)} on {nodes}{split}{held}"
