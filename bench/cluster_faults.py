"""Faults on separate hosts (cluster/netns-cluster.sh; root): what each costs a job, and the
null model's rows/s with 1, 2 and 4 worker hosts.

    python bench/cluster_faults.py --images 3000                 # each fault, on 2 worker hosts
    python bench/cluster_faults.py --scaling 1,2,4 --images 6000

Faults: a job of the null model (50 ms a batch of 8) submitted from the laptop is hit once
20% of its rows are saved. Per fault: the longest time the saved count stood still (the
job's progress lines, one a second), the wall time against the same job without a fault,
the rows labeled twice (the summary's `redone`), and whether every input has exactly one
row. The killed driver's job is resumed from another host once its lease is stale.
Scaling: steady images/s of the null model (no sleep), and the CPU seconds per 1000 rows of
the driver (the books, the saves, the progress), of the head host (the driver, the GCS, the
job server) and of every Ray host.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster_hosts import Hosts, Job  # noqa: E402

JOB_SERVER, HEAD, INPUTS = "http://198.18.0.2:8265", "198.18.0.2:6379", "s3://rbc-data/in"
NULL_JOB = ["--model", "none", "--batch-size", "8", "--checkpoint-every", "1", "--progress-every", "1"]
LINE = re.compile(r"^(\d\d):(\d\d):(\d\d) .* (\d+) saved, ")
TICKS = os.sysconf("SC_CLK_TCK")


def progress(lines: list[str]) -> list[tuple[float, int]]:
    """(seconds of the day, rows saved) of each progress line."""
    found = [LINE.match(line) for line in lines]
    return [(int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]), int(m[4])) for m in found if m]


def longest_stall(points: list[tuple[float, int]]) -> float:
    """The longest time the saved count stood still, once it had begun to grow."""
    longest, since, last = 0.0, None, -1
    for at, saved in points:
        if saved > last:
            if since is not None and last > 0:
                longest = max(longest, at - since)
            since, last = at, saved
    return longest


def wall_and_redone(log: str) -> tuple[float, int]:
    wall = re.search(r"^wall ([\d.]+)s", log, re.M)
    redone = re.search(r"^redone: (\d+) rows", log, re.M)
    return float(wall[1]) if wall else float("nan"), int(redone[1]) if redone else 0


class CpuMeter:
    """CPU seconds of every process in the given hosts' network namespaces, sampled."""

    def __init__(self, hosts: Hosts, names: list[str]):
        self.hosts, self.names = hosts, names
        self.most: dict[tuple[str, str], float] = {}
        self.drivers: set[str] = set()  # the job's driver: `resnet-batch label`, run by the job server
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.wait(0.5):
            for name in self.names:
                for pid in os.popen(f"ip netns pids {self.hosts.prefix}-{name}").read().split():
                    try:
                        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    used = (int(fields[11]) + int(fields[12])) / TICKS
                    self.most[(name, pid)] = max(self.most.get((name, pid), 0.0), used)
                    if pid not in self.drivers and _is_driver(pid):
                        self.drivers.add(pid)

    def __enter__(self) -> CpuMeter:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def seconds(self, name: str | None = None) -> float:
        return sum(v for (host, _), v in self.most.items() if name is None or host == name)

    def driver_seconds(self) -> float:
        return sum(v for (_, pid), v in self.most.items() if pid in self.drivers)


def _is_driver(pid: str) -> bool:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # `python -m resnet_batch label ...`, as submit runs it (or the resnet-batch script)
    return any(w == b"resnet_batch" or w.endswith(b"/resnet-batch") for w in words) and b"label" in words


def submit(hosts: Hosts, output: str, *extra: str, env: dict | None = None) -> Job:
    label = ["label", INPUTS, "--output", output, *NULL_JOB, *extra]
    return hosts.start("laptop", "resnet-batch", "submit", "--address", JOB_SERVER, "--wait", "--", *label, env=env)


def hold(seconds: float) -> None:
    time.sleep(seconds)  # the fault's own length


def fault_worker_killed(hosts: Hosts, job: Job) -> None:
    hosts.script("kill", "worker-1")


def fault_partition(hosts: Hosts, job: Job) -> None:
    hosts.script("link-down", "worker-1")
    hold(30)
    hosts.script("link-up", "worker-1")


def fault_laptop_link(hosts: Hosts, job: Job) -> None:
    hosts.script("link-down", "laptop")
    hold(20)
    hosts.script("link-up", "laptop")


def fault_storage(hosts: Hosts, job: Job) -> None:
    hosts.script("link-down", "s3")
    hold(20)
    hosts.script("link-up", "s3")


FAULTS = {
    "none": None,
    "a worker host killed": fault_worker_killed,
    "a worker host partitioned 30 s": fault_partition,
    "the laptop's link down 20 s": fault_laptop_link,
    "the S3 host down 20 s": fault_storage,
}


def run_faults(hosts: Hosts, images: int) -> None:
    inputs = [f"{INPUTS}/img_{i:03d}.jpg" for i in range(images)]
    base_wall = None
    print("| fault | longest stall of the saved count | wall (without a fault) | rows redone | exactly once |")
    print("| --- | --- | --- | --- | --- |")
    for n, (name, strike) in enumerate(FAULTS.items()):
        hosts.whole()  # a killed or partitioned host back as a node: each fault meets 2 workers
        output = f"s3://rbc-data/fault-{n}"
        job = submit(hosts, output)
        if strike:
            job.saved_at_least(images // 5)
            strike(hosts, job)
        log = job.end()
        wall, redone = wall_and_redone(log)
        base_wall = base_wall or wall
        once = hosts.tool("outcome", output)["paths"] == sorted(inputs)
        stall = longest_stall(progress(log.splitlines()))
        print(f"| {name} | {stall:.0f} s | {wall:.1f} s ({base_wall:.1f} s) | {redone} | {once} |", flush=True)
    run_driver_killed(hosts, inputs)


def run_driver_killed(hosts: Hosts, inputs: list[str]) -> None:
    hosts.whole()
    stale = {"RESNET_BATCH_LEASE_STALE_S": "15"}
    output = "s3://rbc-data/fault-driver"
    label = ["resnet-batch", "label", INPUTS, "--output", output, "--address", HEAD, *NULL_JOB]
    job = hosts.start("worker-1", *label, env=stale)
    job.saved_at_least(len(inputs) // 5)
    hosts.script("kill", "worker-1")
    killed = time.monotonic()
    job.end()
    hosts.script("restart", "worker-1", timeout=200)
    while True:
        resumed = hosts.run("worker-2", *label, "--mode", "resume", env=stale)
        if resumed.returncode != 2:
            break
        time.sleep(1)  # until the dead driver's lease is stale
    done = time.monotonic() - killed
    _, redone = wall_and_redone(resumed.stdout + resumed.stderr)
    once = hosts.tool("outcome", output)["paths"] == sorted(inputs)
    print(f"| the driver's host killed; resumed from another (lease stale after 15 s) | {done:.0f} s from the "
          f"kill to the resume's end | - | {redone} | {once} |")  # fmt: skip


def run_scaling(workers: list[int], images: int) -> None:
    print("| worker hosts | steady images/s | CPU s per 1000 rows: driver | head host | all hosts |")
    print("| --- | --- | --- | --- | --- |")
    for count in workers:
        with tempfile.TemporaryDirectory(prefix="rb-bench-hosts-") as state:
            hosts = Hosts(Path(state), prefix="rbb", null_batch_s=0)
            try:
                hosts.script("start", str(count), "1", timeout=400)
                hosts.tool("put-images", INPUTS, str(images), "5")
                names = ["head", *(f"worker-{i + 1}" for i in range(count))]
                with CpuMeter(hosts, names) as cpu:
                    log = submit(hosts, "s3://rbc-data/scaling").end()
                steady = re.search(r"steady [\d.]+s \(([\d.]+) images/s\)", log)
                per_k = 1000 / images
                print(f"| {count} | {steady[1] if steady else '?'} | {cpu.driver_seconds() * per_k:.2f} | "
                      f"{cpu.seconds('head') * per_k:.2f} | {cpu.seconds() * per_k:.2f} |", flush=True)  # fmt: skip
            finally:
                hosts.script("stop", timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--scaling", help="worker host counts, e.g. 1,2,4 (default: the faults instead)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: the hosts are network and mount namespaces")
    if args.scaling:
        run_scaling([int(n) for n in args.scaling.split(",")], args.images)
        return
    with tempfile.TemporaryDirectory(prefix="rb-bench-hosts-") as state:
        hosts = Hosts(Path(state), prefix="rbb")
        try:
            hosts.script("start", "2", "1", timeout=400)
            hosts.tool("put-images", INPUTS, str(args.images), "5")
            run_faults(hosts, args.images)
        finally:
            hosts.script("stop", timeout=120)


if __name__ == "__main__":
    main()
