"""cluster/local-cluster.sh as a new user runs it: start (every node joined), submit a job,
stop (nothing left), then a plain local job that starts its own Ray."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .helpers import RESNET_BATCH, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster" / "local-cluster.sh"
EXAMPLES = ROOT / "examples" / "images"
JOB = ["--model", "none"]  # the whole pipeline; what a row holds is tested elsewhere
# The README's example: model actors that hold a CPU each, which must leave decoding one.
MODEL_JOB = ["--model", "resnet18", "--weights", "none", "--precision", "fp32", "--batch-size", "8"]


def test_start_submit_stop_then_a_local_job(tmp_path):
    pytest.importorskip("ray.dashboard", reason="the job server needs ray[default]")
    state = tmp_path / "state"
    env = {
        **os.environ,
        "STATE_DIR": str(state),
        "HEAD_PORT": str(free_port()),
        "DASHBOARD_PORT": str(free_port()),
        "RAY_AUTH_MODE": "token",
    }
    env.pop("RAY_ADDRESS", None)

    def script(*args, timeout=240):
        return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)

    started = script("start", "2", "1")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "up: 3 nodes (head + 2 workers, 2 CPUs)" in started.stdout
        assert f"job server: http://127.0.0.1:{env['DASHBOARD_PORT']}" in started.stdout
        status = script("status")
        assert status.returncode == 0 and "up: 3 nodes alive, 2 CPUs" in status.stdout, status.stdout
        out = tmp_path / "out"
        submitted = subprocess.run(
            [
                *RESNET_BATCH,
                "submit",
                "--address",
                f"http://127.0.0.1:{env['DASHBOARD_PORT']}",
                "--wait",
                "--",
                "label",
                str(EXAMPLES),
                "--output",
                str(out),
                *MODEL_JOB,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-2000:]
        assert pq.read_table(out).num_rows == len(list(EXAMPLES.iterdir()))
        # The plan leaves decoding a CPU of the two: no wait for the decode tasks' CPU.
        assert "waiting for 1 CPU for the decode tasks" not in submitted.stdout, submitted.stdout[-3000:]
    finally:
        pids = [int(p.read_text()) for p in state.glob("*.pid")]
        stopped = script("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    left = [pid for pid in pids if subprocess.run(["pgrep", "-g", str(pid)], capture_output=True).returncode == 0]
    assert not left, f"process groups left running: {left}"
    assert script("status").stdout.strip() == "not started"
    local = subprocess.run(
        [*RESNET_BATCH, "label", str(EXAMPLES), "--output", str(tmp_path / "local"), *JOB],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert local.returncode == 0, local.stderr
