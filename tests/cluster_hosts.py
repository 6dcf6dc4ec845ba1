"""The hosts of cluster/netns-cluster.sh, for the tests and the bench that run jobs on them:
commands and faults by host, a job's output lines read as they come, and the outcome of an
output on the S3 host (through tests/cluster_tools.py, run on the laptop)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "netns-cluster.sh"
SAVED = re.compile(r" (\d+) saved, ")


class Hosts:
    """cluster/netns-cluster.sh, started for this module; faults and commands by host."""

    def __init__(self, state: Path, prefix: str = "rbt", null_batch_s: float = 0.05):
        self.env = {**os.environ, "STATE_DIR": str(state), "NETNS_PREFIX": prefix}
        # The null model's batches take this long where the nodes run them: a job lasts long enough to be hit.
        self.env["RESNET_BATCH_NULL_BATCH_SECONDS"] = str(null_batch_s)
        self.state, self.prefix = state, prefix

    def script(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"netns-cluster.sh {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout

    def run(self, host: str, *cmd: str, env: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SCRIPT), "run", host, *cmd],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )

    def start(self, host: str, *cmd: str, env: dict | None = None) -> Job:
        return Job([str(SCRIPT), "run", host, *cmd], {**self.env, **(env or {})})

    def tool(self, *args: str) -> dict:
        done = self.run("laptop", "python", "-m", "tests.cluster_tools", *args)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.splitlines()[-1])

    def whole(self, workers: int = 2) -> None:
        """Every worker host a live Ray node again. A host partitioned long enough for Ray to
        declare its node dead comes back without one (a dead node never rejoins): reboot it."""
        alive = self.script("status").split("Ray nodes alive:", 1)[1].splitlines()[0].split()
        for n in range(1, workers + 1):
            if f"198.18.0.{10 + n}" not in alive:
                self.script("kill", f"worker-{n}")
                self.script("restart", f"worker-{n}", timeout=200)

    def tmp(self, host: str) -> Path:
        """The host's /tmp, as this machine sees it."""
        return self.state / "hosts" / host / "tmp"

    def exactly_once(self, output: str, inputs: list[str]) -> dict:
        seen = self.tool("outcome", output)
        assert seen["rows"] == len(inputs) and seen["paths"] == sorted(inputs), (seen["rows"], len(inputs))
        return seen


class Job:
    """A command on a host, its output lines read as they come (to hit it at the right moment)."""

    def __init__(self, args: list[str], env: dict):
        self.process = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, what: str, ready, limit_s: float = 240) -> str:
        """The first line for which `ready(line)` holds; fails if the job ends first."""
        deadline = time.monotonic() + limit_s
        with self.changed:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if ready(line):
                        return line
                seen = len(self.lines)
                assert self.process.poll() is None, f"{what}: the job ended first:\n" + "\n".join(self.lines[-30:])
                assert time.monotonic() < deadline, f"{what}: not within {limit_s} s:\n" + "\n".join(self.lines[-30:])
                self.changed.wait(timeout=1)

    def saved_at_least(self, rows: int, limit_s: float = 240) -> int:
        line = self.wait_for(f"{rows} rows saved", lambda s: bool(SAVED.search(s)) and saved_in(s) >= rows, limit_s)
        return saved_in(line)

    def end(self, limit_s: float = 400) -> str:
        self.process.wait(timeout=limit_s)
        self.reader.join(timeout=30)
        return "\n".join(self.lines)


def saved_in(line: str) -> int:
    found = SAVED.search(line)
    return int(found.group(1)) if found else -1
