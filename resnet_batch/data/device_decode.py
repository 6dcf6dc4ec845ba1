"""--decode gpu: JPEG bytes -> center-cropped uint8 batches on the model's device, batched.

nvJPEG decodes a whole batch in one call (torchvision.io, whose CUDA decoder serialises
itself, so no lock of ours is held around it). Resize and center crop are then two linear
maps, one per axis: the antialiased filter weights torchvision (and Pillow) use, restricted
to the crop's rows and columns and computed for a whole chunk of images at once, applied
as two batched matrix products. No kernel is launched per image: the decoded images are
concatenated, gathered row by row into a zero-padded batch by one index built on the host
and copied once, and the weights come from six numbers per image in that same copy.

Pixels differ from the CPU path by nvJPEG's IDCT and chroma upsampling, and by float
rounding: the resize alone is within a grey level of Pillow's;
tests/test_device_decode.py pins the embeddings' agreement.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import one_line
from .preprocessing import Preprocessing, crop_offset, resized_size


# Filter radius and kernel of Pillow's (and torchvision's antialiased) resampling, a = -0.5.
def _triangle(x: torch.Tensor) -> torch.Tensor:
    return (1 - x.abs()).clamp_(min=0)


def _cubic(x: torch.Tensor) -> torch.Tensor:
    a, x = -0.5, x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


FILTERS = {"bilinear": (1.0, _triangle), "bicubic": (2.0, _cubic)}  # preprocessing.DEVICE_FILTERS

# Decoded pixels per chunk (images x padded height x padded width): bounds the padded
# buffer (x 3 channels x 2 bytes in float16) at ~400 MB whatever the batch holds.
CHUNK_PIXELS = 1 << 26


def resize_weights(in_size: torch.Tensor, out_size: torch.Tensor, offset: torch.Tensor, crop: int,
                   padded: int, interpolation: str) -> torch.Tensor:
    """(N, crop, padded) weights: row o of image n is output pixel o of its crop.

    Image n has `in_size[n]` pixels along this axis, resized to `out_size[n]`; its crop
    starts at resized pixel `offset[n]` (negative: zero padding, as torchvision's
    CenterCrop pads). Rows are Pillow's precompute_coeffs, columns past the image are 0.
    """
    radius, kernel = FILTERS[interpolation]
    in_size, out_size = in_size.float()[:, None, None], out_size.float()[:, None, None]
    out_index = torch.arange(crop, device=in_size.device, dtype=torch.float32)[None, :, None] + offset[:, None, None]
    scale = in_size / out_size
    filter_scale = scale.clamp(min=1.0)
    support = radius * filter_scale
    center = (out_index + 0.5) * scale
    lo = (center - support + 0.5).floor().clamp(min=0)
    hi = torch.minimum((center + support + 0.5).floor(), in_size)
    j = torch.arange(padded, device=in_size.device, dtype=torch.float32)[None, None, :]
    weights = kernel((j - center + 0.5) / filter_scale) * ((j >= lo) & (j < hi))
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)
    inside = (out_index >= 0) & (out_index < out_size)  # outside the resized image: padding, zeros
    return weights * inside


@dataclass
class DeviceCrops:
    """What a batch of JPEGs became: uint8 (k, 3, crop, crop), crop j that of input `ok[j]`,
    and an error string for each other input (by its index in the input list)."""

    crops: torch.Tensor
    ok: list[int]
    errors: dict[int, str]


class DeviceDecoder:
    """Batched nvJPEG decode, then batched antialiased resize and center crop."""

    def __init__(self, prep: Preprocessing, device: torch.device):
        self.prep = prep
        self.device = device
        # float16 holds 0..255 exactly and GEMMs accumulate in float32; CPUs lack fast float16.
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32

    def __call__(self, jpegs: list[bytes]) -> DeviceCrops:
        images, errors = self.decode(jpegs)
        # Similar sizes share a chunk, so padding to the chunk's largest wastes little; the
        # crops stay in that order (`ok` says whose each is): no scatter back.
        shapes = {i: tuple(image.shape[1:]) for i, image in images.items()}
        ok = sorted(shapes, key=shapes.get)
        parts = [self.resize_crop([images[i] for i in chunk]) for chunk in _chunks(ok, [shapes[i] for i in ok])]
        crop = self.prep.crop_size
        crops = torch.cat(parts) if parts else torch.empty((0, 3, crop, crop), dtype=torch.uint8, device=self.device)
        return DeviceCrops(crops, ok, errors)

    def decode(self, jpegs: list[bytes]) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 0.29 deprecates torchvision.io for TorchCodec
            warnings.filterwarnings("ignore", message=".*buffer is not writable")  # bytes are only read
            from torchvision.io import ImageReadMode, decode_jpeg

            return self._decode(jpegs, ImageReadMode.RGB, decode_jpeg)

    def _decode(self, jpegs, rgb, decode_jpeg) -> tuple[dict[int, torch.Tensor], dict[int, str]]:
        datas = [torch.frombuffer(b, dtype=torch.uint8) for b in jpegs]  # views, not copies
        try:
            images, errors = dict(enumerate(decode_jpeg(datas, mode=rgb, device=self.device))), {}
        except RuntimeError:  # one bad file fails the whole call: find it, one by one
            images, errors = {}, {}
            for i, data in enumerate(datas):
                try:
                    images[i] = decode_jpeg(data, mode=rgb, device=self.device)
                except RuntimeError as exc:
                    errors[i] = f"decode_error: {one_line(exc, 200) or 'nvJPEG failed'}"
        if self.device.type == "cuda":
            # Some torchvision builds order the decoder's stream before the default stream
            # only, not the caller's: wait for that too, and keep the images' memory until
            # this stream is done with them.
            stream = torch.cuda.current_stream(self.device)
            stream.wait_stream(torch.cuda.default_stream(self.device))
            for img in images.values():
                img.record_stream(stream)
        return images, errors

    def resize_crop(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Decoded uint8 (3, H, W) images -> uint8 (n, 3, crop, crop), as torchvision's preset.

        A fixed handful of kernels, whatever the images: one concatenation, one gather of
        rows into a zero-padded batch, the filter weights, two batched products.
        """
        crop, device, n = self.prep.crop_size, self.device, len(images)
        geometry = _geometry(images, self.prep)
        tallest, widest = int(geometry.heights.max()), int(geometry.widths.max())
        on_device = host_to_device(torch.from_numpy(geometry.packed(tallest)), device)  # one copy
        starts, sizes = on_device[: n * 3 * tallest], on_device[n * 3 * tallest:].view(6, n)
        # Every row of every image is a window of `widest` pixels into one flat buffer; what a
        # window holds past its row's end gets weight 0, rows past an image's end read zeros.
        flat = torch.cat([img.reshape(-1) for img in images] + [torch.zeros(widest, dtype=torch.uint8, device=device)])
        windows = flat.as_strided((flat.numel() - widest + 1, widest), (1, 1))
        padded = windows.index_select(0, starts).to(self.dtype).view(n, 3 * tallest, widest)
        widths, heights, new_widths, new_heights, left, top = sizes
        interpolation = self.prep.interpolation
        across = resize_weights(widths, new_widths, left, crop, widest, interpolation).to(self.dtype)  # (n, crop, W)
        down = resize_weights(heights, new_heights, top, crop, tallest, interpolation).to(self.dtype)  # (n, crop, H)
        # As Pillow: the horizontal pass, rounded (half up) to 8 bits, then the vertical one.
        wide = _to_8_bits(padded @ across.transpose(1, 2)).view(n, 3, tallest, crop)
        return _to_8_bits(down[:, None] @ wide).to(torch.uint8)


@dataclass
class _Geometry:
    """Per-image sizes of a chunk, on the host: what the device needs, built in one step."""

    heights: np.ndarray
    widths: np.ndarray
    new_widths: np.ndarray
    new_heights: np.ndarray
    left: np.ndarray
    top: np.ndarray

    def packed(self, tallest: int) -> np.ndarray:
        """int64: each (image, channel, row)'s start in the concatenated pixels (rows past an
        image's height: the zeros after them), then widths, heights, resized sizes, crop offsets."""
        areas = self.heights * self.widths
        base = np.concatenate([[0], np.cumsum(3 * areas)[:-1]])
        rows = np.arange(tallest)
        starts = (base[:, None, None] + np.arange(3)[None, :, None] * areas[:, None, None]
                  + rows[None, None, :] * self.widths[:, None, None])
        starts = np.where(rows[None, None, :] < self.heights[:, None, None], starts, 3 * areas.sum())
        sizes = [self.widths, self.heights, self.new_widths, self.new_heights, self.left, self.top]
        return np.concatenate([starts.ravel()] + sizes).astype(np.int64)


def _geometry(images: list[torch.Tensor], prep: Preprocessing) -> _Geometry:
    heights = np.array([img.shape[1] for img in images], dtype=np.int64)
    widths = np.array([img.shape[2] for img in images], dtype=np.int64)
    resized = np.array([resized_size(w, h, prep.resize_size) for w, h in zip(widths.tolist(), heights.tolist())],
                       dtype=np.int64).reshape(-1, 2)
    left = np.array([crop_offset(w, prep.crop_size) for w in resized[:, 0].tolist()], dtype=np.int64)
    top = np.array([crop_offset(h, prep.crop_size) for h in resized[:, 1].tolist()], dtype=np.int64)
    return _Geometry(heights, widths, resized[:, 0], resized[:, 1], left, top)


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`: on a GPU copied from pinned memory, ordered on the current
    stream without waiting for it (the caching host allocator keeps the pinned buffer until
    the copy is done)."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _to_8_bits(x: torch.Tensor) -> torch.Tensor:
    return x.add_(0.5).floor_().clamp_(0, 255)


def _chunks(order: list[int], shapes: list[tuple[int, int]]) -> list[list[int]]:
    """Consecutive runs of `order` whose padded size (count x tallest x widest) fits CHUNK_PIXELS."""
    chunks, current, tallest, widest = [], [], 0, 0
    for k, (h, w) in zip(order, shapes):
        t, wd = max(tallest, h), max(widest, w)
        if current and (len(current) + 1) * t * wd > CHUNK_PIXELS:
            chunks.append(current)
            current, t, wd = [], h, w
        current.append(k)
        tallest, widest = t, wd
    return chunks + ([current] if current else [])
