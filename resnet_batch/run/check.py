"""The exactly-once check: the output read back, every input counted against it.

Inputs the driver listed are counted here from their path hashes. Directories are walked
again: local ones in this process (listing there waits on no network, and a finished
resume then needs no Ray at all), object-store prefixes in Ray tasks (listing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray

from ..core.pathset import isin_sorted
from ..core.storage import is_local
from ..data.sources import InputPlan
from ..output.writer import OutputDir
from .listing import count_against


@dataclass
class OutputCheck:
    inputs: int = 0
    already_done: int = 0
    rows: int = 0
    missing: int = 0
    duplicates: int = 0
    hidden: int = 0  # entries of walked directories left out for starting with "."


_count_directory = ray.remote(num_cpus=0)(count_against)


def needs_ray(plan: InputPlan) -> bool:
    return not all(is_local(d) for d in plan.directories)


def check_output(out: OutputDir, plan: InputPlan, listed: np.ndarray, done_before: np.ndarray) -> OutputCheck:
    """How many inputs were done before this run, lack a row, or have two.

    `listed` and `done_before` are sorted path hashes: the driver's own listing, and the
    output's rows before this run.
    """
    written = out.completed_hashes()
    check = OutputCheck(rows=len(written), duplicates=len(written) - len(np.unique(written)))
    check.inputs = plan.table.num_rows
    check.already_done = int(isin_sorted(listed, done_before).sum())
    check.missing = int((~isin_sorted(listed, written)).sum())
    counts = [count_against(d, listed, done_before, written) for d in plan.directories if is_local(d)]
    remote = [d for d in plan.directories if not is_local(d)]
    if remote:
        refs = [ray.put(a) for a in (listed, done_before, written)]
        counts += ray.get([_count_directory.remote(d, *refs) for d in remote])
    for inputs, done, missing, hidden in counts:
        check.inputs += inputs
        check.already_done += done
        check.missing += missing
        check.hidden += hidden
    return check
