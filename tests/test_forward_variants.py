"""gpu_check's forward variants, in-process on the CPU with a small model: every variant
runs and is timed, the compiled ones state their compile time and when it is repaid."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from forward_variants import variants  # noqa: E402

pytestmark = pytest.mark.slow  # compiles: tens of seconds on 2 cores


def test_every_forward_variant_runs_and_states_its_setup():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    )
    rows = {
        r["what"]: r
        for r in variants(model, 2, torch.device("cpu"), "fp32", steps=2, compile_modes=("max-autotune-no-cudagraphs",))
    }
    assert list(rows) == [
        "forward: eager, NCHW",
        "forward: eager, channels_last (the job's default)",
        "forward: torch.compile, max-autotune-no-cudagraphs",
        "forward: CUDA graph of the channels_last forward, replayed",
    ]
    for what in list(rows)[:3]:
        assert rows[what]["ms"] > 0 and rows[what]["images_per_s"] > 0
    compiled = rows["forward: torch.compile, max-autotune-no-cudagraphs"]
    assert compiled["setup_s"] > 0
    assert compiled["note"].startswith(f"{compiled['setup_s']:.1f} s to compile or capture; ")
    assert compiled["note"].endswith(" images") or compiled["note"].endswith("never repaid")
    assert rows["forward: CUDA graph of the channels_last forward, replayed"]["ms"] == 0
