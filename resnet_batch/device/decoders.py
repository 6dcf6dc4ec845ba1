"""JPEG bytes -> uint8 crops on the model's device, by one of a few decoders.

Two GPU decoders give (3, H, W) uint8 images that resize.py crops as one batch:
- "nvjpeg": torchvision.io.decode_jpeg on the device, one batched call (its CUDA decoder
  serialises itself, so no lock of ours is held around it). On a CPU device the same call
  runs libjpeg-turbo, which is how the device path is tested without a GPU.
- "nvimgcodec": NVIDIA's nvImageCodec (`pip install "resnet-batch[gpu]"`): the hardware
  JPEG engines where the GPU has them, CUDA otherwise, on the caller's stream, with
  libjpeg's "fancy" chroma upsampling (the CPU path's).
"auto" takes nvImageCodec where it imports and passes the warm-up's checks (self_check.py),
nvJPEG otherwise. HostDecoder is what an actor falls back to when its device path fails the
warm-up check: the CPU path's own decode and geometry (data/decode.py), crops copied in.

Every backend call goes through a DecodeBarrier, here and nowhere else. On H100-class GPUs
the JPEG engines do not honour the stream they are given, and torchvision decodes on a
private stream: a decode may write its output before work queued ahead of it has run. The
outputs come from PyTorch's caching allocator, which hands a block back out as soon as it
is freed on its stream, so without the barrier a decode can overwrite a tensor that queued
kernels still read (a silently wrong row). The barrier (1) drains, on the host, the streams
that read what decodes allocate (the caller's stream, where the previous batch's resize
may still be queued, and the default stream), and (2) on a GPU, serves every allocation a
decode makes from a memory pool of the decoder's own, so no block of the forward's (whose
streams are not drained, and keep overlapping) is ever handed to a decoder.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np
import torch

from ..core.errors import UsageError, one_line, require
from ..data.decode import decode_checked
from ..data.preprocessing import NVIMGCODEC, NVJPEG, Preprocessing
from .resize import resize_crop_chunked
from .streams import current_stream, host_to_device

HOST_THREADS = 4  # Pillow releases the GIL: a few threads keep the fallback's cores busy


@dataclass
class DeviceCrops:
    """What a batch of JPEGs became: uint8 (k, 3, crop, crop), crop j that of input `ok[j]`,
    and an error string for each other input (by its index in the input list)."""

    crops: torch.Tensor
    ok: list[int]
    errors: dict[int, str]


class JpegBackend(Protocol):
    name: str

    def decode(self, jpegs: list[bytes]) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
        """(3, H, W) uint8 images on the device by input index, and an error per other index."""
        ...


class Drainable(Protocol):
    """What the barrier drains: a CUDA stream, or a test's stand-in for one."""

    def synchronize(self) -> None: ...


class DecodeBarrier:
    """`barrier.decode(backend, jpegs)`: the backend's decode, once every stream that may
    still read a block the decode could be handed is drained (module docstring).

    `streams` gives the streams to drain at each call (on a GPU: the caller's current stream
    and the default stream); `pool` is the decoder's own memory pool (None on a CPU).
    `DecodeBarrier.off()` decodes without it: only the corruption check uses that, to show
    what the barrier prevents.
    """

    def __init__(
        self,
        streams: Callable[[], Sequence[Drainable]],
        pool: torch.cuda.MemPool | None = None,
        device: torch.device | None = None,
        enabled: bool = True,
    ):
        self.streams, self.pool, self.device, self.enabled = streams, pool, device, enabled

    @classmethod
    def for_device(cls, device: torch.device) -> DecodeBarrier:
        if device.type != "cuda":
            return cls(lambda: ())
        return cls(partial(_streams_to_drain, device), torch.cuda.MemPool(), device)

    @classmethod
    def off(cls) -> DecodeBarrier:
        return cls(lambda: (), enabled=False)

    def decode(self, backend: JpegBackend, jpegs: list[bytes]) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
        if self.enabled:
            for stream in self.streams():
                stream.synchronize()
        with self._own_pool():
            return backend.decode(jpegs)

    def _own_pool(self):
        if self.pool is None or not self.enabled:
            return nullcontext()
        return torch.cuda.use_mem_pool(self.pool, self.device)


def _streams_to_drain(device: torch.device) -> tuple[torch.cuda.Stream, ...]:
    current, default = torch.cuda.current_stream(device), torch.cuda.default_stream(device)
    return (current,) if current == default else (current, default)


class NvJpeg:
    name = NVJPEG

    def __init__(self, device: torch.device):
        self.device = device

    def decode(self, jpegs: list[bytes]) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 0.29 deprecates torchvision.io for TorchCodec
            warnings.filterwarnings("ignore", message=".*buffer is not writable")  # bytes are only read
            from torchvision.io import ImageReadMode, decode_jpeg

            datas = [torch.frombuffer(b, dtype=torch.uint8) for b in jpegs]  # views, not copies
            try:
                images = dict(enumerate(decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)))
                errors: dict[int, str] = {}
            except RuntimeError:  # one bad file fails the whole call: find it, one by one
                images, errors = {}, {}
                for i, data in enumerate(datas):
                    try:
                        images[i] = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
                    except RuntimeError as exc:
                        errors[i] = f"decode_error: {one_line(exc, 200) or 'nvJPEG failed'}"
        stream = current_stream(self.device)
        if stream is not None:
            # Some torchvision builds order the decoder's stream before the default stream
            # only, not the caller's: wait for that too, and keep the images' memory until
            # this stream is done with them.
            stream.wait_stream(torch.cuda.default_stream(self.device))
            for img in images.values():
                img.record_stream(stream)
        return images, errors


class NvImageCodec:
    name = NVIMGCODEC

    def __init__(self, device: torch.device):
        nvimgcodec = require("nvidia.nvimgcodec", "gpu", "--gpu-decoder nvimgcodec")
        if device.type != "cuda":
            raise UsageError("--gpu-decoder nvimgcodec decodes on a CUDA GPU, and this model actor has none")
        self.codec, self.device = nvimgcodec, device
        self.decoder = nvimgcodec.Decoder(device_id=device.index or 0, options=":fancy_upsampling=1")
        self.params = nvimgcodec.DecodeParams(
            apply_exif_orientation=False,
            color_spec=nvimgcodec.ColorSpec.SRGB,
            sample_format=nvimgcodec.SampleFormat.P_RGB,
        )

    def decode(self, jpegs: list[bytes]) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
        streams, errors = {}, {}
        for i, data in enumerate(jpegs):
            try:
                streams[i] = self.codec.CodeStream(data)
            except Exception as exc:  # a header it cannot parse costs its row only
                errors[i] = f"decode_error: {one_line(exc, 200) or 'nvImageCodec could not parse it'}"
        keys = list(streams)
        stream = torch.cuda.current_stream(self.device)
        decoded = self.decoder.decode([streams[i] for i in keys], params=self.params, cuda_stream=stream.cuda_stream)
        images = {}
        for i, image in zip(keys, decoded, strict=False):
            if image is None:
                errors[i] = "decode_error: nvImageCodec could not decode it"
            else:  # a view of the decoder's buffer, which the tensor keeps alive
                images[i] = _planar(torch.as_tensor(image, device=self.device))
        return images, errors


def _planar(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W), whichever layout the decoder handed back."""
    if image.ndim == 3 and image.shape[0] != 3 and image.shape[-1] == 3:
        image = image.permute(2, 0, 1)
    return image.contiguous()


BACKENDS: dict[str, Callable[[torch.device], JpegBackend]] = {NVJPEG: NvJpeg, NVIMGCODEC: NvImageCodec}


def jpeg_backend(name: str, device: torch.device) -> JpegBackend:
    """The decoder `name` names ("auto": nvImageCodec where it imports and runs, else nvJPEG)."""
    if name == "auto":
        try:
            return NvImageCodec(device)
        except UsageError:
            return NvJpeg(device)
    return BACKENDS[name](device)


class DeviceDecoder:
    """A JPEG backend's batch decode, then the batched resize and center crop."""

    def __init__(
        self, prep: Preprocessing, device: torch.device, backend: JpegBackend, barrier: DecodeBarrier | None = None
    ):
        self.prep, self.device, self._backend = prep, device, backend
        self.name = backend.name
        self.barrier = barrier if barrier is not None else DecodeBarrier.for_device(device)
        # float16 holds 0..255 exactly and GEMMs accumulate in float32; CPUs lack fast float16.
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32

    def decode(self, jpegs: list[bytes]) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
        """The backend's images and errors, behind the barrier (no resize)."""
        return self.barrier.decode(self._backend, jpegs)

    def __call__(self, jpegs: list[bytes]) -> DeviceCrops:
        images, errors = self.decode(jpegs)
        keys = list(images)
        if not keys:
            crop = self.prep.crop_size
            return DeviceCrops(torch.empty((0, 3, crop, crop), dtype=torch.uint8, device=self.device), [], errors)
        crops, order = resize_crop_chunked([images[i] for i in keys], self.prep, self.dtype)
        return DeviceCrops(crops, [keys[j] for j in order], errors)


class HostDecoder:
    """The CPU path in the model actor: Pillow's decode and geometry, the crops copied in."""

    name = "host"

    def __init__(self, prep: Preprocessing, device: torch.device):
        self.prep, self.device = prep, device
        self.pool = ThreadPoolExecutor(HOST_THREADS, thread_name_prefix="host-decode")

    def __call__(self, jpegs: list[bytes]) -> DeviceCrops:
        decoded = list(self.pool.map(partial(decode_checked, prep=self.prep), jpegs))
        crops = {i: d.pixels for i, d in enumerate(decoded) if d.pixels is not None}
        errors = {i: d.error or "decode_error" for i, d in enumerate(decoded) if d.pixels is None}
        crop, ok = self.prep.crop_size, list(crops)
        pixels = np.stack([crops[i] for i in ok]) if ok else np.empty((0, 3, crop, crop), np.uint8)
        return DeviceCrops(host_to_device(torch.from_numpy(pixels), self.device), ok, errors)
