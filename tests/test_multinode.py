"""A real multi-node Ray cluster on one machine loses a worker node mid-job; nothing is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import write_jpegs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def test_worker_node_lost_mid_job(tmp_path):
    src, n = tmp_path / "in", 60
    write_jpegs(src, n, seed=9, height=200, width=260)
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "tests.multinode_job", str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith('{"killed_node_had_actor"')]
    assert lines, run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads(lines[-1])
    assert report["killed_node_had_actor"] and report["files_before_kill"] >= 2
    assert report["files_before_kill"] * 4 < n, "the node must die mid-job"
    assert report["complete"] and report["inputs"] == n and report["rows"] == n, (report, run.stderr[-3000:])
    paths = pq.read_table(out, columns=["path"]).column("path").to_pylist()
    assert sorted(paths) == sorted(str(p) for p in src.iterdir())
