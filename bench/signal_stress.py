"""SIGTERM at many moments of a job's start, on loaded cores: does every job stop, and leave
no process of its Ray behind?

    python bench/signal_stress.py                       # 20 jobs, 2 busy loops beside them
    python bench/signal_stress.py --delays 3.3 3.5 3.7 --rounds 10 --load 2

Each job labels 2 generated JPEGs with resnet18 (random init) and is sent SIGTERM `delay`
seconds after launch. A job must exit 143 within 60 s (a hang is reported with the job
left running for a `py-spy dump`, then killed), and `pgrep -f session_*_PID` must find
nothing of its Ray once it has exited.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import write_jpegs  # noqa: E402

JOB = ["--model", "resnet18", "--weights", "none", "--precision", "fp32", "--batch-size", "8", "--mode", "overwrite"]


def one_job(folder: Path, out: Path, delay: float) -> str:
    job = subprocess.Popen([sys.executable, "-m", "resnet_batch", "label", str(folder), "--output", str(out), *JOB],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"})
    time.sleep(delay)
    job.send_signal(signal.SIGTERM)
    try:
        job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        subprocess.run(["py-spy", "dump", "--pid", str(job.pid)], check=False)
        job.kill()
        job.communicate()
        return "HUNG"
    left = subprocess.run(["pgrep", "-f", f"session_.*_{job.pid}"], capture_output=True, text=True).stdout.split()
    if job.returncode != 128 + signal.SIGTERM:
        return f"exit {job.returncode}"
    return f"left {left}" if left else "ok"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delays", type=float, nargs="+", default=[1.6, 2.2, 2.8, 3.1, 3.3, 3.5, 3.7, 4.0, 4.3, 5.0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy loops beside the jobs")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/resnet-batch-signals"))
    args = p.parse_args()
    folder = args.workdir / "in"
    if not folder.exists():
        write_jpegs(folder, 2, seed=51)
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    failed = 0
    try:
        for i, delay in enumerate(args.delays * args.rounds):
            outcome = one_job(folder, args.workdir / f"out{i % 4}", delay)
            failed += outcome != "ok"
            print(f"SIGTERM at {delay:.1f} s: {outcome}", flush=True)
            time.sleep(1.5)
    finally:
        for loop in loops:
            loop.kill()
    print(f"{failed} of {len(args.delays) * args.rounds} jobs failed")


if __name__ == "__main__":
    main()
