"""Copies onto a device and timing on its streams, without waiting on the host."""

from __future__ import annotations

import warnings

import numpy as np
import torch


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`: on a GPU copied from pinned memory, ordered on the current
    stream without waiting for it (the caching host allocator keeps the pinned buffer until
    the copy is done)."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def array_to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """A uint8 batch from the host (often a read-only view of Arrow memory) on `device`."""
    with warnings.catch_warnings():
        # Batches arrive read-only (zero-copy from Arrow); they are only read, never written.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(np.ascontiguousarray(images))
    return host_to_device(tensor, device)


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
