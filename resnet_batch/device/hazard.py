"""The decoder hazard as a measurement: does a decode write into memory still being read?

One trial, on the caller's current stream: tensors the size of the decoded images are
filled from the host, ~`busy_ms` of work is queued, then one reduction per tensor; the
tensors are freed while their reductions are still queued (their blocks go back to the
caching allocator at once), the JPEGs are decoded, and the reductions are compared with
the same sums taken on the host. A decoder that writes its output before the queued work
has run (nvJPEG's hardware engine on H100-class GPUs, torchvision's private stream) lands
in those blocks and changes the sums: the trial is corrupted. On a CPU nothing is queued,
so nothing can be corrupted; the trial still runs the same code (the tests' smoke run).

bench/gpu_check.py reports "corrupted N of M" per decoder and JPEG kind, with and without
the barrier; the warm-up check (self_check.py) runs a few trials with it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

Decode = Callable[[list[bytes]], object]


@dataclass(frozen=True)
class Corruption:
    corrupted: int
    trials: int

    def __str__(self) -> str:
        return f"corrupted {self.corrupted} of {self.trials}"


def corruption_trials(
    decode: Decode, device: torch.device, jpegs: list[bytes], sizes: list[int], trials: int, busy_ms: float = 100.0
) -> Corruption:
    """`trials` trials of `decode(jpegs)` (module docstring); `sizes`: the decoded images' bytes."""
    rng = np.random.default_rng(0)
    busy = _BusyWork(device, busy_ms)
    corrupted = 0
    for _ in range(trials):
        hosts = [torch.from_numpy(rng.integers(0, 256, size, dtype=np.uint8)) for size in sizes]
        want = torch.tensor([int(h.sum(dtype=torch.int64)) for h in hosts], dtype=torch.int64)
        victims = [h.to(device) for h in hosts]
        sums = torch.zeros(len(victims), dtype=torch.int64, device=device)
        busy.queue()
        for i, victim in enumerate(victims):
            torch.sum(victim.view(-1), 0, dtype=torch.int64, out=sums[i])
        del victims  # freed with their reductions still queued
        decoded = decode(jpegs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        del decoded
        corrupted += int(not torch.equal(sums.cpu(), want))
    return Corruption(corrupted, trials)


class _BusyWork:
    """About `ms` of queued GPU work (matrix products), measured once; nothing on a CPU."""

    def __init__(self, device: torch.device, ms: float):
        self.device, self.steps = device, 0
        if device.type != "cuda" or ms <= 0:
            return
        self.matrix = torch.randn(2048, 2048, device=device, dtype=torch.float16)
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(20):
            self.matrix @ self.matrix
        torch.cuda.synchronize(device)
        per_step_ms = (time.perf_counter() - start) * 1000 / 20
        self.steps = max(1, int(ms / max(per_step_ms, 1e-3)))

    def queue(self) -> None:
        for _ in range(self.steps):
            self.matrix @ self.matrix


def decoded_sizes(jpegs: list[bytes]) -> list[int]:
    """The bytes of each JPEG decoded to RGB uint8 (from its header)."""
    sizes = []
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as image:
            sizes.append(3 * image.width * image.height)
    return sizes
