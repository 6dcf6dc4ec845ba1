"""--decode gpu: JPEG bytes -> center-cropped uint8 batches on the model's device, batched.

nvJPEG decodes a whole batch in one call (torchvision.io, whose CUDA decoder serialises
itself, so no lock of ours is held around it). Resize and center crop are then two linear
maps, one per axis: the antialiased filter weights torchvision (and Pillow) use, restricted
to the crop's rows and columns and computed for a whole chunk of images at once, applied
as two batched matrix products. Per image there is one kernel: the copy of its decoded
pixels into the chunk's zero-padded buffer; everything else is a few kernels per chunk.

Pixels differ from the CPU path by nvJPEG's IDCT and chroma upsampling, and by float
rounding: the resize alone is within a grey level of Pillow's;
tests/test_device_decode.py pins the embeddings' agreement.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

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
    """What a batch of JPEGs became: uint8 (k, 3, crop, crop) for the rows in `ok`, and an
    error string for each other row (by its index in the input list)."""

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
        ok = [i for i in range(len(jpegs)) if i not in errors]
        crop = self.prep.crop_size
        crops = torch.empty((len(ok), 3, crop, crop), dtype=torch.uint8, device=self.device)
        # Similar sizes share a chunk, so padding to the chunk's largest wastes little.
        order = sorted(range(len(ok)), key=lambda k: tuple(images[ok[k]].shape[1:]))
        for chunk in _chunks(order, [tuple(images[ok[k]].shape[1:]) for k in order]):
            crops[torch.tensor(chunk, device=self.device)] = self.resize_crop([images[ok[k]] for k in chunk])
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
        """Decoded uint8 (3, H, W) images -> uint8 (n, 3, crop, crop), as torchvision's preset."""
        prep, crop, device = self.prep, self.prep.crop_size, self.device
        heights = [img.shape[1] for img in images]
        widths = [img.shape[2] for img in images]
        padded = torch.zeros((len(images), 3, max(heights), max(widths)), dtype=self.dtype, device=device)
        for i, img in enumerate(images):
            padded[i, :, : heights[i], : widths[i]] = img
        resized = [resized_size(w, h, prep.resize_size) for w, h in zip(widths, heights)]

        def axis(sizes, new_sizes, length):
            offsets = [crop_offset(n, crop) for n in new_sizes]
            as_tensor = lambda values: torch.tensor(values, device=device)  # noqa: E731
            return resize_weights(as_tensor(sizes), as_tensor(new_sizes), as_tensor(offsets), crop, length,
                                  prep.interpolation).to(self.dtype)

        across = axis(widths, [w for w, _ in resized], padded.shape[3])  # (n, crop, W)
        down = axis(heights, [h for _, h in resized], padded.shape[2])  # (n, crop, H)
        # As Pillow: the horizontal pass, rounded (half up) to 8 bits, then the vertical one.
        n, _, height, width = padded.shape
        wide = _to_8_bits(padded.view(n, 3 * height, width) @ across.transpose(1, 2)).view(n, 3, height, crop)
        return _to_8_bits(down[:, None] @ wide).to(torch.uint8)


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
