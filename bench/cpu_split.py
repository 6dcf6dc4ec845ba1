"""Where the CPU goes while a command runs: CPU per process between two points in time.

    python bench/cpu_split.py --start 22 --stop 34 -- \\
        resnet-batch label bench/data --output /tmp/out --mode overwrite --weights none

Samples utime+stime of every process on the machine at --start and --stop seconds after
launch (pick a window inside the steady phase: after the first batch, before the end) and
prints each process's share, 100% being one core, grouped by command line. Everything
running on the machine counts, so keep it otherwise idle.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections import defaultdict


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """pid -> (command line, CPU seconds so far) for every process."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline") as f:
                name = f.read().replace("\0", " ").strip()[:70]
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry)] = (name or stat.split("(", 1)[1].split(")")[0], (int(fields[11]) + int(fields[12])) / ticks)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", type=float, required=True, help="seconds after launch")
    p.add_argument("--stop", type=float, required=True, help="seconds after launch")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    launched = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(args.start)
    before, t0 = cpu_seconds(), time.monotonic()
    time.sleep(max(0.0, args.stop - (t0 - launched)))
    after, t1 = cpu_seconds(), time.monotonic()
    output = proc.communicate()[0]
    print("\n".join(line for line in output.splitlines() if "images/s steady" in line))
    shares: dict[str, float] = defaultdict(float)
    for pid, (name, seconds) in after.items():
        shares[name] += seconds - before.get(pid, (name, 0.0))[1]
    window = t1 - t0
    for name, seconds in sorted(shares.items(), key=lambda share: -share[1]):
        if seconds / window >= 0.005:
            print(f"{100 * seconds / window:6.1f}%  {name}")
    print(f"{100 * sum(shares.values()) / window:6.1f}%  in all, over {window:.0f} s (100% = one core)")


if __name__ == "__main__":
    main()
