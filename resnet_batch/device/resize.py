"""Decoded images -> center-cropped uint8 batches on their device, batched.

Resize and center crop are two linear maps, one per axis: the antialiased filter weights
torchvision (and Pillow) use, restricted to the crop's rows and columns and computed for a
whole chunk of images at once, applied as two batched matrix products. No kernel is
launched per image: the decoded images are concatenated, gathered row by row into a
zero-padded batch by one index built on the host and copied once, and the weights come
from six numbers per image in that same copy.

The resize is within a grey level of Pillow's (float rounding); a device decoder's pixels
differ from the CPU path's by its IDCT and chroma upsampling (decoders.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.preprocessing import Preprocessing, crop_offset, resized_size
from .streams import host_to_device


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


def resize_weights(
    in_size: torch.Tensor, out_size: torch.Tensor, offset: torch.Tensor, crop: int, padded: int, interpolation: str
) -> torch.Tensor:
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


def resize_crop(images: list[torch.Tensor], prep: Preprocessing, dtype: torch.dtype) -> torch.Tensor:
    """Decoded uint8 (3, H, W) images on one device -> uint8 (n, 3, crop, crop), as
    torchvision's preset. A fixed handful of kernels, whatever the images: one
    concatenation, one gather of rows into a zero-padded batch, the filter weights, two
    batched products."""
    crop, device, n = prep.crop_size, images[0].device, len(images)
    geometry = _geometry(images, prep)
    tallest, widest = int(geometry.heights.max()), int(geometry.widths.max())
    on_device = host_to_device(torch.from_numpy(geometry.packed(tallest)), device)  # one copy
    starts, sizes = on_device[: n * 3 * tallest], on_device[n * 3 * tallest :].view(6, n)
    # Every row of every image is a window of `widest` pixels into one flat buffer; what a
    # window holds past its row's end gets weight 0, rows past an image's end read zeros.
    flat = torch.cat([img.reshape(-1) for img in images] + [torch.zeros(widest, dtype=torch.uint8, device=device)])
    windows = flat.as_strided((flat.numel() - widest + 1, widest), (1, 1))
    padded = windows.index_select(0, starts).to(dtype).view(n, 3 * tallest, widest)
    widths, heights, new_widths, new_heights, left, top = sizes
    across = resize_weights(widths, new_widths, left, crop, widest, prep.interpolation).to(dtype)  # (n, crop, W)
    down = resize_weights(heights, new_heights, top, crop, tallest, prep.interpolation).to(dtype)  # (n, crop, H)
    # As Pillow: the horizontal pass, rounded (half up) to 8 bits, then the vertical one.
    wide = _to_8_bits(padded @ across.transpose(1, 2)).view(n, 3, tallest, crop)
    return _to_8_bits(down[:, None] @ wide).to(torch.uint8)


def resize_crop_chunked(
    images: list[torch.Tensor], prep: Preprocessing, dtype: torch.dtype
) -> tuple[torch.Tensor, list[int]]:
    """Crops of any number of images, in chunks that bound the padded buffer, and the order
    they come in: similar sizes share a chunk, so padding to the chunk's largest wastes
    little; `order[j]` is the index (in `images`) of crop j (no scatter back)."""
    shapes = [(int(image.shape[1]), int(image.shape[2])) for image in images]
    order = sorted(range(len(images)), key=shapes.__getitem__)
    parts = [
        resize_crop([images[i] for i in chunk], prep, dtype) for chunk in _chunks(order, [shapes[i] for i in order])
    ]
    return torch.cat(parts), order


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
        starts = (
            base[:, None, None]
            + np.arange(3)[None, :, None] * areas[:, None, None]
            + rows[None, None, :] * self.widths[:, None, None]
        )
        starts = np.where(rows[None, None, :] < self.heights[:, None, None], starts, 3 * areas.sum())
        sizes = [self.widths, self.heights, self.new_widths, self.new_heights, self.left, self.top]
        return np.concatenate([starts.ravel()] + sizes).astype(np.int64)


def _geometry(images: list[torch.Tensor], prep: Preprocessing) -> _Geometry:
    heights = np.array([img.shape[1] for img in images], dtype=np.int64)
    widths = np.array([img.shape[2] for img in images], dtype=np.int64)
    resized = np.array(
        [resized_size(w, h, prep.resize_size) for w, h in zip(widths.tolist(), heights.tolist(), strict=False)],
        dtype=np.int64,
    ).reshape(-1, 2)
    left = np.array([crop_offset(w, prep.crop_size) for w in resized[:, 0].tolist()], dtype=np.int64)
    top = np.array([crop_offset(h, prep.crop_size) for h in resized[:, 1].tolist()], dtype=np.int64)
    return _Geometry(heights, widths, resized[:, 0], resized[:, 1], left, top)


def _to_8_bits(x: torch.Tensor) -> torch.Tensor:
    return x.add_(0.5).floor_().clamp_(0, 255)


def _chunks(order: list[int], shapes: list[tuple[int, int]]) -> list[list[int]]:
    """Consecutive runs of `order` whose padded size (count x tallest x widest) fits CHUNK_PIXELS."""
    chunks: list[list[int]] = []
    current: list[int] = []
    tallest = widest = 0
    for k, (h, w) in zip(order, shapes, strict=False):
        t, wd = max(tallest, h), max(widest, w)
        if current and (len(current) + 1) * t * wd > CHUNK_PIXELS:
            chunks.append(current)
            current, t, wd = [], h, w
        current.append(k)
        tallest, widest = t, wd
    return chunks + ([current] if current else [])
