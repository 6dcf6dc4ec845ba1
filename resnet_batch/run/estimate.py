"""What `label --dry-run` measures: how many inputs there are, and at what rate they go.

The inputs are listed as the job would list them (manifests read, folders walked, tar
shards' headers read), in this process, for at most COUNT_LIMIT_S: past it the line says
how many are listed so far. `--calibrate N` measures the rate: the job itself, on the first
N inputs, into a temporary folder (config/estimate.py words it, or guesses it without N).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable

from ..config.estimate import InputCount, Rate
from ..config.label_config import LabelConfig
from ..core.columns import PATH
from ..data.input_plan import InputPlan
from .listing import unit_tables_here

COUNT_LIMIT_S = 20.0


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
