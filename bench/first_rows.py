"""Seconds from launch to the first labeled rows of a label job, read from its progress lines.

    python bench/first_rows.py /tmp/resnet-batch-scale/manifest-1000000.txt   # (bench/scale.py makes it)
    python bench/first_rows.py INPUT --runs 3 -- --model resnet18 --weights none

The job runs with `--progress-every 0.5` (and the null model's flags from bench/scale.py
unless other flags follow `--`); once a progress line counts a labeled image, the time is
taken and the job is stopped with SIGINT (it saves what it has and exits). A shorter,
repeatable measure of start-up plus the first batch than a whole bench/scale.py run.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import NULL_JOB  # noqa: E402

LABELED = re.compile(r"labeling: [1-9]\d*/")


def first_rows(source: str, flags: list[str], timeout: float) -> float | None:
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "resnet_batch",
            "label",
            source,
            "--output",
            out,
            *flags,
            "--progress-every",
            "0.5",
        ]
        started = time.time()
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = None
        for line in job.stdout or ():
            if LABELED.search(line):
                seconds = time.time() - started
                break
            if time.time() - started > timeout:
                break
        job.send_signal(signal.SIGINT)
        job.communicate(timeout=120)
        return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("flags", nargs="*", help="label flags (after --); default: the null model's, as in scale.py")
    args = p.parse_args()
    for run in range(args.runs):
        seconds = first_rows(args.input, args.flags or NULL_JOB, args.timeout)
        print(f"run {run + 1}: first labeled rows after {seconds:.1f} s" if seconds else f"run {run + 1}: none in time")


if __name__ == "__main__":
    main()
