"""Eight GPUs a node: the plan and the job on Ray's declared resources (this machine has no
GPU). One model actor per GPU at most, each holding one GPU of its own node; decode tasks,
the CPU share and the writers as planned; every input one row. The actors compute on the
CPU (tests/gpu_nodes_job.py), so nothing here touches CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from .conftest import write_jpegs

pytestmark = pytest.mark.e2e  # runs the command, or Ray, in processes of its own


ROOT = Path(__file__).resolve().parents[1]


def test_a_job_on_eight_gpu_nodes_is_placed_as_planned(tmp_path):
    """Two nodes: what one node shows (a GPU each, at most 8 a node) and what only several do."""
    nodes, n = 2, 16
    write_jpegs(tmp_path / "in", n, seed=8, height=120, width=160)
    run = subprocess.run(
        [sys.executable, "-m", "tests.gpu_nodes_job", str(nodes), str(tmp_path / "in"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=ROOT,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith('{"plan"')]
    assert run.returncode == 0 and lines, run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads(lines[-1])
    gpus = 8 * nodes
    assert report["plan"][:2] == [
        f"plan for {gpus} GPUs on {nodes} node{'s' if nodes > 1 else ''}, {nodes} node{'s' if nodes > 1 else ''} "
        "with CPUs (12 or more each):",
        f"  model: {gpus} actors, one per GPU, each holding 1 GPU and 1 CPU, 2 calls at once, 4 torch threads per "
        "call; batch 2, precision bf16 where the GPU has it, else fp16 (auto)",
    ]
    # 12 CPUs a node: 8 for the model actors, 4 for decode tasks, 4 // 8 cores each -> at least 1.
    assert report["plan"][2].startswith(
        "  decoding: JPEGs in the model actors by nvimgcodec where installed, else "
        "nvjpeg (checked at warm-up), the rest and a share of them by decode tasks "
        "of 8 rows, 1 CPU each at idle priority, on 1 core per model actor"
    )
    assert report["complete"] and report["inputs"] == report["rows"] == n and not report["errors"]

    # The pool grows to the plan's size as work waits: however far it grew, each actor holds
    # one GPU, no GPU is held twice, no node holds more than its 8.
    placements = report["placements"]
    held = defaultdict(list)
    for placement in placements:
        assert len(placement["gpus"]) == 1, placement
        held[placement["node"]].append(placement["gpus"][0])
    assert 1 <= len(placements) <= gpus and len(held) <= nodes
    for node, ids in held.items():
        assert len(ids) == len(set(ids)) <= 8 and set(ids) <= {str(i) for i in range(8)}, (node, ids)
    summary = "\n".join(report["lines"])
    assert f"model actors placed: {len(placements)} on {len(held)} node" in summary
    assert f"holding {len(placements)} GPU" in summary
