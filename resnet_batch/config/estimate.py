"""How long a plan takes, in words: `label --dry-run`'s count of the inputs and its estimate.

Without a measured rate (`--calibrate N`), the estimate is a rough guide from the forward's
rate per core measured on a 2-core x86 machine (BENCHMARKS.md), which says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.registry import BASIC_WIDTHS, NULL_MODEL, architecture
from .plan import ExecutionPlan

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
