"""The weights' preprocessing recipe, and its geometry on PIL images, without importing torch.

Decode tasks only resize and crop; importing torch there cost each decode worker ~3 s of
a core at start-up (torchvision's import) for two PIL calls. The geometry below is what
torchvision's `ImageClassification` preset does to a PIL image (`F.resize` with one size,
then `F.center_crop`), step for step; tests/test_decode.py checks it pixel for pixel
against torchvision itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..core.errors import ImageError

# torchvision's InterpolationMode values -> Pillow's resampling filters (its pil_modes_mapping)
PIL_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}

# The resize filters device/resize.py implements, and the JPEG decoders device/decoders.py
# offers (named here for the driver, which imports no torch).
DEVICE_FILTERS = ("bilinear", "bicubic")
NVJPEG, NVIMGCODEC = "nvjpeg", "nvimgcodec"
GPU_DECODERS = (NVJPEG, NVIMGCODEC)


@dataclass(frozen=True)
class Preprocessing:
    """The parameters of torchvision's `ImageClassification` preset."""

    resize_size: int
    crop_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str

    @property
    def resizes_on_device(self) -> bool:
        """Whether device/resize.py can resize for this recipe (its filters: DEVICE_FILTERS)."""
        return self.interpolation in DEVICE_FILTERS

    def describe(self) -> dict:
        return {
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "antialias": True,
            "color": "RGB, EXIF orientation applied",
        }


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) with the shorter side at `shorter`; the longer side truncated, as torchvision does."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def check_resize(width: int, height: int, prep: Preprocessing, whole: WholeImage | None, max_pixels: int) -> None:
    """Refuse (`too_large`) an image whose resize would allocate more than `max_pixels`, before
    it does: a 100000x1 strip is small, but its shorter side at 256 makes it 25600000x256."""
    new_w, new_h = whole.resized_size(width, height) if whole else resized_size(width, height, prep.resize_size)
    if new_w * new_h > max_pixels:
        raise ImageError(
            "too_large", f"{width}x{height} resizes to {new_w}x{new_h} pixels, over the limit of {max_pixels}"
        )


def crop_offset(size: int, crop: int) -> int:
    # Larger crops pad first (left/top gets the smaller half), then crop the padded image at 0.
    return -((crop - size) // 2) if crop > size else int(round((size - crop) / 2.0))


def resize_center_crop(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Resize the shorter side, center-crop, as uint8 (3, crop, crop)."""
    size = resized_size(img.width, img.height, prep.resize_size)
    if size != img.size:
        img = img.resize(size, PIL_RESAMPLING[prep.interpolation])
    crop = prep.crop_size
    left, top = crop_offset(img.width, crop), crop_offset(img.height, crop)
    img = img.crop((left, top, left + crop, top + crop))  # outside the image: zeros, as torchvision pads
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


@dataclass(frozen=True)
class WholeImage:
    """`--crop none`: the whole image, shorter side resized, padded at the right and bottom.

    Resizing is torchvision's `Resize(resize, max_size=2 * resize)` on a PIL image. Padding
    rounds each side up to a multiple of PAD (the coarsest stride, so cells of every stage
    line up with pixels) and the longer side to a multiple of BUCKET, so that images of like
    aspect ratio share one of a few batch shapes.
    """

    resize: int
    PAD = 32
    BUCKET = 64

    @property
    def max_size(self) -> int:
        return 2 * self.resize

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) as torchvision computes them for one size and a max_size; a side
        it would truncate to 0 (a 5000x2 strip) is kept at 1 pixel."""
        short, long = sorted((width, height))
        new_short, new_long = self.resize, int(self.resize * long / short)
        if new_long > self.max_size:
            new_short, new_long = max(1, int(self.max_size * new_short / new_long)), self.max_size
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def scale(self, width: int, height: int) -> float:
        """Resized pixels per original pixel, on both axes: the ratio of the side that is set
        exactly (the shorter one, or the longer one where max_size caps it); the other side is
        truncated, so it is off by under one resized pixel."""
        short, long = sorted((width, height))
        if int(self.resize * long / short) > self.max_size:
            return self.max_size / long
        return self.resize / short

    def padded_size(self, width: int, height: int) -> tuple[int, int]:
        """The batch shape (width, height) a resized image is padded to."""

        def up(n: int, multiple: int) -> int:
            return -(-n // multiple) * multiple

        if width >= height:
            return up(width, self.BUCKET), up(height, self.PAD)
        return up(width, self.PAD), up(height, self.BUCKET)

    def describe(self) -> dict:
        return {
            "crop": "none",
            "resize_shorter_side": self.resize,
            "max_longer_side": self.max_size,
            "padding": f"zeros (after normalisation) at the right and bottom, sides rounded up to multiples "
            f"of {self.PAD}, the longer one to a multiple of {self.BUCKET}",
        }


def resize_pad(img: Image.Image, prep: Preprocessing, whole: WholeImage) -> tuple[np.ndarray, int, int]:
    """Resize the whole image, pad to its batch shape: (uint8 (3, H, W), resized width, height)."""
    width, height = whole.resized_size(img.width, img.height)
    if (width, height) != img.size:
        img = img.resize((width, height), PIL_RESAMPLING[prep.interpolation])
    pad_w, pad_h = whole.padded_size(width, height)
    out = np.zeros((3, pad_h, pad_w), dtype=np.uint8)
    out[:, :height, :width] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return out, width, height
