"""The forward at the job's batch size, five ways, for gpu_check's `kernels` section.

eager (NCHW), channels_last (the job's default), torch.compile (default mode, and
max-autotune-no-cudagraphs) and CUDA graphs (one captured forward, replayed), each timed
as the median of `steps` batches after its warm-up, with the seconds the compile or
capture took and the images after which that time is repaid against channels_last.
The job's default changes only when a GPU run shows a variant's gain repaid well within a
100k-image job.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext

import torch
from device_decode import timed

AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def variants(
    model: torch.nn.Module,
    batch: int,
    device: torch.device,
    precision: str,
    steps: int,
    compile_modes: tuple[str, ...] = ("default", "max-autotune-no-cudagraphs"),
) -> list[dict]:
    """One row per variant: what, ms per batch, images/s, setup seconds, when it is repaid."""
    model = copy.deepcopy(model).eval().to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    autocast = torch.autocast(device.type, dtype=AUTOCAST[precision]) if precision in AUTOCAST else nullcontext()
    nchw = model.to(memory_format=torch.contiguous_format)
    rows = [_row("eager, NCHW", _time(nchw, x, autocast, device, steps), batch)]
    last = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    x_last = x.contiguous(memory_format=torch.channels_last)
    base = _time(last, x_last, autocast, device, steps)
    rows.append(_row("eager, channels_last (the job's default)", base, batch))
    for mode in compile_modes:
        started = time.perf_counter()
        compiled = torch.compile(last, mode=None if mode == "default" else mode)
        _call(compiled, x_last, autocast, device)  # the compile
        setup = time.perf_counter() - started
        rows.append(
            _row(f"torch.compile, {mode}", _time(compiled, x_last, autocast, device, steps), batch, setup, base)
        )
    rows.append(_cuda_graph_row(last, x_last, autocast, device, steps, batch, base))
    return rows


def _call(model, x, autocast, device) -> None:
    with torch.inference_mode(), autocast:
        model(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(model, x, autocast, device, steps: int) -> float:
    def step():
        with torch.inference_mode(), autocast:
            model(x)

    return timed(step, device, steps)


def _cuda_graph_row(model, x, autocast, device, steps: int, batch: int, base: float) -> dict:
    what = "CUDA graph of the channels_last forward, replayed"
    if device.type != "cuda":
        return _row(what, 0.0, batch, note="not available: CUDA graphs need a GPU")
    started = time.perf_counter()
    static = x.clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), torch.inference_mode(), autocast:
        for _ in range(3):  # cuDNN's autotuning and the allocator's pools, before the capture
            model(static)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), autocast, torch.cuda.graph(graph):
        model(static)
    torch.cuda.synchronize(device)
    setup = time.perf_counter() - started
    return _row(what, timed(graph.replay, device, steps), batch, setup, base)


def _row(
    what: str, seconds: float, batch: int, setup_s: float | None = None, base_s: float | None = None, note: str = ""
) -> dict:
    row = {
        "what": f"forward: {what}",
        "ms": round(seconds * 1000, 2),
        "images_per_s": round(batch / seconds) if seconds else None,
        "setup_s": setup_s,
        "note": note,
    }
    if setup_s is not None:
        saved_per_image = (base_s - seconds) / batch if base_s and seconds else 0.0
        repaid = f"repaid after {setup_s / saved_per_image:,.0f} images" if saved_per_image > 0 else "never repaid"
        row["note"] = note or f"{setup_s:.1f} s to compile or capture; {repaid}"
    return row
