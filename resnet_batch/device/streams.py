"""Copies onto a device and timing on its streams, without waiting on the host."""

from __future__ import annotations

import torch


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`: on a GPU copied from pinned memory, ordered on the current
    stream without waiting for it (the caching host allocator keeps the pinned buffer until
    the copy is done)."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def timing_event(stream: torch.cuda.Stream | None) -> torch.cuda.Event | None:
    """A timing event recorded on `stream` now (None on a CPU, which has no stream)."""
    if stream is None:
        return None
    event = torch.cuda.Event(enable_timing=True)
    event.record(stream)
    return event


def current_stream(device: torch.device) -> torch.cuda.Stream | None:
    """The current CUDA stream of `device` (None on a CPU)."""
    return torch.cuda.current_stream(device) if device.type == "cuda" else None
