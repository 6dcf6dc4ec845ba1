"""CPU seconds of every process a command starts, sampled until it exits.

    python bench/cpu_by_process.py python -m resnet_batch label /tmp/resnet-batch-startup/images-20 \
        --output /tmp/o --model resnet18 --weights none --precision auto

On 2 cores a small job is CPU-bound from launch to first batch: every Ray process and
actor started competes with the model actor's torch import. This names them (Ray renames
its workers `ray::ActorName`) with what each used, read from /proc every 0.2 s; a process
that exits between two samples is counted up to its last sample.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def sample(seen: dict) -> None:
    """(pid, start time) -> (CPU seconds, command line) for every process now alive."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read().replace("\0", " ").strip()
        except OSError:  # exited meanwhile
            continue
        key = (pid, fields[19])  # start time: a reused pid is another process
        seen[key] = ((int(fields[11]) + int(fields[12])) / TICKS, cmd or seen.get(key, (0, "?"))[1])


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    before: dict = {}
    sample(before)
    seen: dict = {}
    start = time.monotonic()
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        sample(seen)
        time.sleep(0.2)
    wall = time.monotonic() - start
    rows = sorted(((cpu, cmd) for key, (cpu, cmd) in seen.items() if key not in before), reverse=True)
    print(f"exit {proc.returncode}, wall {wall:.1f} s, {sum(c for c, _ in rows):.1f} CPU-s in {len(rows)} processes")
    for cpu, cmd in rows:
        print(f"{cpu:6.2f}  {cmd[:110]}")


if __name__ == "__main__":
    main()
