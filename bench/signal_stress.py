"""SIGTERM at many moments of a job's start, on loaded cores: does every job stop, say so in
one line, and leave no process of its Ray behind?

    python bench/signal_stress.py                       # 20 jobs, 2 busy loops beside them
    python bench/signal_stress.py --delays 3.3 3.5 3.7 --rounds 10 --load 2
    python bench/signal_stress.py --after dataset --delays 0 0.5 1 1.5 2 2.5 3 --images 300

Each job labels --images generated JPEGs with resnet18 (random init) and is sent SIGTERM
`delay` seconds after launch, or (`--after dataset`) after its first progress line from
the running dataset ("starting N model actors"). A job must exit 143 within 60 s with a
last line saying what it saved (a hang is reported with the job left running for a
`py-spy dump`, then killed), and `pgrep -f session_*_PID` must find nothing of its Ray
once it has exited.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import write_jpegs  # noqa: E402
from tests.helpers import session_processes  # noqa: E402

JOB = [
    "--model",
    "resnet18",
    "--weights",
    "none",
    "--precision",
    "fp32",
    "--batch-size",
    "8",
    "--mode",
    "overwrite",
    "--progress-every",
    "0.1",
]
DATASET_STARTED = re.compile(r"^\d\d:\d\d:\d\d starting \d+ model actor")


def one_job(folder: Path, out: Path, delay: float, after_dataset: bool) -> str:
    job = subprocess.Popen(
        [sys.executable, "-m", "resnet_batch", "label", str(folder), "--output", str(out), *JOB],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"},
        start_new_session=True,  # its Ray's processes are found by its session
    )
    lines = []
    if after_dataset:  # the progress lines, until the dataset runs
        for line in job.stderr or ():
            lines.append(line)
            if DATASET_STARTED.match(line):
                break
    time.sleep(delay)
    job.send_signal(signal.SIGTERM)
    try:
        _, rest = job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        subprocess.run(["py-spy", "dump", "--pid", str(job.pid)], check=False)
        job.kill()
        job.communicate()
        return "HUNG"
    last = ("".join(lines) + rest).strip().splitlines()[-1:]
    left = session_processes(job.pid)
    if job.returncode != 128 + signal.SIGTERM:
        return f"exit {job.returncode}, last line {last}"
    if not last or not last[0].startswith("stopped by SIGTERM: "):
        return f"exit 143 without saying what it saved: {last}"
    return f"left {left}" if left else "ok"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delays", type=float, nargs="+", default=[1.6, 2.2, 2.8, 3.1, 3.3, 3.5, 3.7, 4.0, 4.3, 5.0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy loops beside the jobs")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/resnet-batch-signals"))
    p.add_argument("--images", type=int, default=2, help="JPEGs each job labels")
    p.add_argument("--after", choices=("launch", "dataset"), default="launch", help="what the delays count from")
    args = p.parse_args()
    folder = args.workdir / f"in-{args.images}"
    if not folder.exists():
        write_jpegs(folder, args.images, seed=51, height=120, width=160)
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    failed = 0
    try:
        for i, delay in enumerate(args.delays * args.rounds):
            outcome = one_job(folder, args.workdir / f"out{i % 4}", delay, args.after == "dataset")
            failed += outcome != "ok"
            print(f"SIGTERM at {delay:.1f} s: {outcome}", flush=True)
            time.sleep(1.5)
    finally:
        for loop in loops:
            loop.kill()
    print(f"{failed} of {len(args.delays) * args.rounds} jobs failed")


if __name__ == "__main__":
    main()
