"""A batch's way onto the model's device, overlapped with the forward of the batch before it.

A GPU actor runs two calls at once (config/plan.py). Each call's data path (crops copied in
from pinned memory, JPEGs decoded and resized on the device) runs on the feed's own CUDA
stream, one call at a time, and ends in an event; the forward runs on its call's stream and
waits on that event, on the device: no host sync between them. So while batch N's forward
holds the SMs, batch N+1's copy, decode (the JPEG engines) and resize are already queued.

The feed also times both on the device (CUDA events, read once the batch is done, so no
extra sync): those GPU seconds per image are what the CPU decode share is set from
(run/progress/decode_share.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ..data.decode import JPEG_COLUMN, PIXELS_COLUMN
from ..data.preprocessing import Preprocessing
from .decoders import DeviceDecoder, HostDecoder, jpeg_backend
from .self_check import device_path_error, hazard_error
from .streams import array_to_device, host_to_device, timing_event


@dataclass
class Fed:
    """A batch on the device: its uint8 crops, the event its data path ends in, and that
    path's start (events on the feed's stream; None on a CPU)."""

    images: torch.Tensor
    ready: torch.cuda.Event | None = None
    started: torch.cuda.Event | None = None
    device_decoded: int = 0  # JPEGs the device decoded for it
    cpu_s: float = 0.0  # on a CPU: the data path's own seconds

    def images_on_current_stream(self) -> torch.Tensor:
        """The crops, safe to read on the current stream (which waits for them on the device)."""
        if self.ready is not None:
            stream = torch.cuda.current_stream(self.images.device)
            stream.wait_event(self.ready)
            self.images.record_stream(stream)  # its memory stays the images' until this stream is done
        return self.images

    def data_path_s(self) -> float:
        """GPU seconds of this batch's data path (call once the batch is done)."""
        if self.started is None or self.ready is None:
            return self.cpu_s
        return self.started.elapsed_time(self.ready) / 1000


class DeviceFeed:
    """Batches -> uint8 crops on `device`, on a stream of the feed's own; `decoder` names
    the JPEG decoder (decoders.py) where the actor decodes JPEGs, else None."""

    def __init__(self, prep: Preprocessing, device: torch.device, decoder: str | None = None):
        self.prep, self.crop = prep, prep.crop_size
        self.device = device
        self.decoder: DeviceDecoder | HostDecoder | None = None
        self.requested = decoder
        if decoder is not None:
            self.decoder = DeviceDecoder(prep, device, jpeg_backend(decoder, device))
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        # One data path at a time: they share the JPEG engines and a stream, and the forward
        # of the batch before is what they should overlap with, not each other.
        self.lock = threading.Lock()

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray] | np.ndarray, errors: np.ndarray | None = None) -> Fed:
        """A uint8 (N, 3, H, W) array, or a --decode gpu batch (whose decode errors go into `errors`)."""
        with self.lock, torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
            started, clock = timing_event(self.stream), time.perf_counter()
            if isinstance(batch, np.ndarray):
                images, decoded = array_to_device(batch, self.device), 0
            else:
                if errors is None:
                    raise ValueError("a --decode gpu batch needs `errors`, where its decode errors go")
                images, decoded = self._decode_batch(batch, errors)
            return Fed(images, timing_event(self.stream), started, decoded, time.perf_counter() - clock)

    def check(self) -> str | None:
        """Run the JPEG path once on the check images, and on a GPU the hazard trials
        (self_check.py); if it raises, its crops differ from the CPU path's or it corrupts,
        decode on the host from now on and say why. Under "auto", nvImageCodec failing
        hands over to nvJPEG, checked in turn."""
        if not isinstance(self.decoder, DeviceDecoder):
            return None
        error = self._check_decoder(self.decoder)
        if error is not None and self.requested == "auto" and self.decoder.name != "nvjpeg":
            nvjpeg = DeviceDecoder(self.prep, self.device, jpeg_backend("nvjpeg", self.device))
            if self._check_decoder(nvjpeg) is None:
                self.decoder = nvjpeg
                return None
        if error is not None:
            error = f"{self.decoder.name}: {error}"
            self.decoder = HostDecoder(self.prep, self.device)
        return error

    def _check_decoder(self, decoder: DeviceDecoder) -> str | None:
        with self.lock, torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
            error = device_path_error(decoder, self.prep)
            if error is None and self.device.type == "cuda":
                error = hazard_error(decoder)
        return error

    def _decode_batch(self, batch: dict[str, np.ndarray], errors: np.ndarray) -> tuple[torch.Tensor, int]:
        """The crops the decode stage made (copied in) and those of the JPEGs it passed on
        (decoded here), in the batch's row order."""
        crop = self.crop
        images = torch.zeros((len(errors), 3, crop, crop), dtype=torch.uint8, device=self.device)
        local = [i for i, pixels in enumerate(batch[PIXELS_COLUMN]) if pixels]
        if local:
            pixels = np.stack([np.frombuffer(batch[PIXELS_COLUMN][i], np.uint8) for i in local])
            images.index_copy_(0, self.index(local), array_to_device(pixels.reshape(-1, 3, crop, crop), self.device))
        jpeg_rows = [i for i, data in enumerate(batch[JPEG_COLUMN]) if data]
        if not jpeg_rows:
            return images, 0
        if self.decoder is None:
            raise RuntimeError("JPEG bytes reached a model actor that decodes none: its plan has no --gpu-decoder")
        decoded = self.decoder([batch[JPEG_COLUMN][i] for i in jpeg_rows])
        for k, error in decoded.errors.items():
            errors[jpeg_rows[k]] = error
        if decoded.ok:
            images.index_copy_(0, self.index([jpeg_rows[k] for k in decoded.ok]), decoded.crops)
        return images, len(jpeg_rows) if isinstance(self.decoder, DeviceDecoder) else 0

    def index(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Row numbers on the device: from pinned memory, ordered on the current stream."""
        return host_to_device(torch.tensor(rows, dtype=torch.int64), self.device)
