"""A label run's summary as the command line shows it: the lines it prints at the end and
what `--summary-json` writes."""

from __future__ import annotations

from collections import Counter

from ..model.phases import describe
from ..model.registry import NO_WEIGHTS, RANDOM_WEIGHTS_NOTE
from ..run.summary import LabelSummary


def summary_lines(summary: LabelSummary) -> list[str]:
    """What `label` prints at its end: counts, errors, where the time went, the verdict."""
    errors = _by_category(summary.errors)
    if summary.already_done:
        before = _by_category(summary.errors_before)
        errors += f" in this run; {before} among the {summary.already_done} rows done before"
    phases = summary.timeline.phases()
    steady = f" ({summary.steady_images_per_s:.1f} images/s)" if summary.steady_images_per_s else ""
    skipped = (
        [
            f"not inputs: {summary.hidden} hidden entries (names starting with '.') in the walked folders; "
            "name them as INPUTs or in a manifest to label them"
        ]
        if summary.hidden
        else []
    )
    return [
        f"inputs {summary.inputs}, already done {summary.already_done}, processed {summary.processed}, "
        f"rows in output {summary.rows_in_output}",
        f"errors: {errors}",
        *skipped,
        f"wall {summary.timeline.wall_s:.1f}s = start-up {phases['start-up']:.1f}s + first batch "
        f"{phases['first batch']:.1f}s + steady {phases['steady']:.1f}s{steady} + shutdown "
        f"{phases['shutdown']:.1f}s (final check {summary.timeline.check_s:.1f}s); "
        f"{summary.images_per_s:.1f} images/s overall",
        f"where the time went: {time_bar(phases)}",
        *_start_and_decoding(summary),
        *([f"note: {RANDOM_WEIGHTS_NOTE}"] if summary.weights == NO_WEIGHTS else []),
        _verdict(summary),
    ]


def summary_json(summary: LabelSummary, output: str) -> dict:
    """What `label --summary-json FILE` writes, for the pipelines that call this tool."""
    phases = summary.timeline.phases()
    return {
        "output": output,
        "complete": summary.complete and summary.inputs > 0,
        "weights": summary.weights,
        "inputs": summary.inputs,
        "already_done": summary.already_done,
        "processed": summary.processed,
        "labeled": summary.timeline.labeled,
        "rows_in_output": summary.rows_in_output,
        "missing": summary.missing,
        "duplicates": summary.duplicates,
        "hidden": summary.hidden,
        "outside": summary.outside,
        "errors": dict(sorted(summary.errors.items())),
        "errors_before": dict(sorted(summary.errors_before.items())),
        "seconds": {
            "wall": round(summary.timeline.wall_s, 3),
            **{name: round(v, 3) for name, v in phases.items()},
            "final check": round(summary.timeline.check_s, 3),
        },
        "images_per_s": {"overall": round(summary.images_per_s, 2), "steady": round(summary.steady_images_per_s, 2)},
    }


def _verdict(summary: LabelSummary) -> str:
    if not summary.complete:
        copies = (
            (
                f" (part files not named as resnet-batch names them, copies of others perhaps: "
                f"{', '.join(summary.misnamed[:5])}; move them out of the output)"
            )
            if summary.misnamed
            else ""
        )
        return f"INCOMPLETE: {summary.missing} inputs without a row, {summary.duplicates} duplicate rows{copies}"
    if summary.inputs == 0:
        return (
            "WARNING: no inputs: nothing the INPUTs name is an image, a .tar shard or a manifest "
            "(see `resnet-batch label --help` for what is read); nothing was labeled"
        )
    if summary.outside:
        return (
            f"complete: every input of this run has exactly one row; the output also holds {summary.outside} "
            "rows of inputs this run does not list"
        )
    return "complete: every input has exactly one row"


def _start_and_decoding(summary: LabelSummary) -> list[str]:
    """The first model actor's start, phase by phase, and the CPU decode share where the
    device decoded JPEGs."""
    lines, t = [], summary.timeline
    if t.labeled > summary.processed:  # Ray redid the lost blocks of a node (or a worker) that died
        lines.append(f"redone: {t.labeled - summary.processed} rows labeled twice (their first result was lost)")
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
