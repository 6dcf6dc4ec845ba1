"""bench/gpu_check.py, the one command a lent GPU machine runs, smoke-run on the CPU so
that it cannot rot while no GPU is lent: every section runs and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # runs the command, or Ray, in processes of its own


ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--smoke", "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "gpu_check.json").read_text())
    found = {(c["decoder"], c["kind"], c["barrier"]): c["result"] for c in results["kernels"]["corruption"]}
    assert len(found) == 8  # each decoder, baseline and progressive, with and without the barrier
    for kind in ("baseline", "progressive"):
        for barrier in (True, False):
            assert found["nvjpeg", kind, barrier] == "corrupted 0 of 2"  # a CPU queues nothing
            assert found["nvimgcodec", kind, barrier].startswith("not available")
    assert "corruption: nvjpeg, progressive JPEGs, with the barrier: corrupted 0 of 2" in result.stdout
    rows = {r["what"]: r for r in results["kernels"]["rows"]}
    for stage in (
        "decode: nvjpeg batched",
        "resize + crop, batched",
        "decode + resize + crop, nvjpeg (DeviceDecoder)",
        "decode: PIL decode + resize, one core",
        "actor loop, 2 calls, nvjpeg decoding",
        "forward: eager, NCHW",
        "forward: eager, channels_last (the job's default)",
        "GPU data path alone (feed: decode + resize, device time)",
        "actor loop, JPEGs decoded on the device, 1 call (serial)",
        "actor loop, JPEGs decoded on the device, 2 calls (overlapped, as the job)",
        "decode in a process of its own (own CUDA context, crops handed over by CUDA IPC), forward here",
    ):
        assert rows[stage]["ms"] > 0 and rows[stage]["images_per_s"] > 0, stage
    assert any(r["what"].startswith("forward alone") and r["ms"] > 0 for r in rows.values())
    assert all(r["ms"] > 0 or r["note"].startswith("not available") for r in rows.values())
    assert rows["forward: CUDA graph of the channels_last forward, replayed"]["note"] == (
        "not available: CUDA graphs need a GPU"
    )
    assert results["kernels"]["decoder_choice"].startswith("--gpu-decoder nvjpeg: ")
    profile = results["kernels"]["profile"]
    assert profile["cpu_top"] and profile["batches"] == 3
    assert set(results["bench"]["results"]) == {"bare"}  # --smoke: label runs in its own section
    assert all(r["rate"] > 0 for r in results["bench"]["results"].values())
    label = results["label"]["none"]
    assert label["exit"] == 0
    assert any(line.startswith("model actor start (first of 1): imports ") for line in label["summary"])
    assert results["pytest"] == {"skipped": "no GPU here"}
    assert "| actor loop, JPEGs decoded on the device, 2 calls" in result.stdout  # the Markdown report
