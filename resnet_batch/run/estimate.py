"""What `label --dry-run` adds to the plan: how many inputs there are, and how long they take.

The inputs are listed as the job would list them (manifests read, folders walked, tar
shards' headers read), in this process, for at most COUNT_LIMIT_S: past it the line says
how many are listed so far. The rate is either measured (`--calibrate N`: the job itself,
on the first N inputs, into a temporary folder) or, without it, a rough guide from the
forward's rate per core measured on a 2-core x86 machine (BENCHMARKS.md), which says so.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config.label_config import LabelConfig
from ..config.plan import ExecutionPlan
from ..core.columns import PATH
from ..data.input_plan import InputPlan
from ..model.registry import BASIC_WIDTHS, NULL_MODEL, architecture
from .listing import unit_tables_here

COUNT_LIMIT_S = 20.0
# Images/s per core of a CPU forward at 224x224, channels_last (measured: resnet50 21.8 img/s
# fp32 and 48 bf16 on 2 cores; resnet18 ~2.3x, by its FLOPs). The null model: decoding alone.
CPU_RATE_PER_CORE = {("basic", "fp32"): 25.0, ("basic", "bf16"): 55.0, ("bottleneck", "fp32"): 11.0}
CPU_RATE_PER_CORE[("bottleneck", "bf16")] = 24.0
NULL_RATE_PER_CORE = 1_100.0


@dataclass(frozen=True)
class InputCount:
    found: int
    complete: bool  # every input listed (else: `found` so far, when the time ran out)
    seconds: float
    sample: tuple[str, ...]  # the first inputs found, for --calibrate

    def line(self) -> str:
        if self.complete:
            return f"  inputs: {self.found} listed in {self.seconds:.1f} s (an input listed twice is labeled once)"
        return (
            f"  inputs: at least {self.found} listed so far (listing stopped after {self.seconds:.0f} s; the job's "
            "read tasks list the rest as it runs)"
        )


def count_inputs(plan: InputPlan, limit_s: float = COUNT_LIMIT_S, sample: int = 0) -> InputCount:
    """List `plan`'s inputs for at most `limit_s` seconds."""
    started = time.monotonic()
    found, first = 0, list[str]()
    for unit in plan.units:
        for table in unit_tables_here(unit):
            found += table.num_rows
            if len(first) < sample:
                first += table.column(PATH).to_pylist()[: sample - len(first)]
            if time.monotonic() - started > limit_s:
                return InputCount(found, False, time.monotonic() - started, tuple(first))
    return InputCount(found, True, time.monotonic() - started, tuple(first))


@dataclass(frozen=True)
class Rate:
    images_per_s: float
    start_up_s: float
    how: str  # how it was obtained, in words


def guessed_rate(plan: ExecutionPlan, model: str) -> Rate | None:
    """The forward's measured rate per core times the cores the actors use (CPU only)."""
    if plan.gpus_per_actor:
        return None
    cores = plan.actors * plan.calls_per_actor * plan.threads_per_call
    if model == NULL_MODEL:
        per_core, what = NULL_RATE_PER_CORE, "decoding alone (the null model)"
    else:
        family = "basic" if architecture(model).stage_widths == BASIC_WIDTHS else "bottleneck"
        precision = "bf16" if plan.inference.precision == "bf16" else "fp32"
        per_core, what = CPU_RATE_PER_CORE[(family, precision)], f"{model}'s forward in {precision}"
    return Rate(
        per_core * cores,
        15.0,
        f"a rough guide: {what} measured at {per_core:g} images/s per core on a 2-core x86 machine, x {cores} "
        "cores; --calibrate N measures it here",
    )


def calibrated_rate(cfg: LabelConfig, sample: tuple[str, ...], run: Callable, batch_size: int) -> Rate:
    """Label `sample` (through `run`, i.e. run_label) into a temporary folder: its steady rate,
    and the time to its first rows."""
    with tempfile.TemporaryDirectory(prefix="resnet-batch-calibrate-") as folder:
        manifest = f"{folder}/sample.txt"
        with open(manifest, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write("\n".join(sample) + "\n")
        summary = run(cfg.replace(inputs=(manifest,), output=f"{folder}/out", mode="overwrite"))
    phases = summary.timeline.phases()
    first_rows = phases["start-up"] + phases["first batch"]
    how = (
        f"measured here: {summary.processed} inputs labeled into a temporary folder (--calibrate), first rows "
        f"after {first_rows:.1f} s"
    )
    if summary.steady_images_per_s:
        return Rate(summary.steady_images_per_s, first_rows, how)
    short = f"{how}; no steady phase: give --calibrate at least {4 * batch_size} (4 batches) to measure one"
    return Rate(summary.processed / max(phases["first batch"], 1e-3), phases["start-up"], short)


def estimate_line(count: InputCount, rate: Rate | None) -> str:
    if rate is None or rate.images_per_s <= 0:
        return "  estimate: none without a measured rate on GPUs: --calibrate N labels N inputs here to measure it"
    seconds = count.found / rate.images_per_s + rate.start_up_s
    inputs = f"{count.found} inputs" if count.complete else f"at least {count.found} inputs"
    return (
        f"  estimate: {rate.images_per_s:.1f} images/s ({rate.how}); {_duration(seconds)} for {inputs}, "
        f"start-up included"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"~{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"
