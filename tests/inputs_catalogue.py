"""The bad and odd inputs a large collection meets, generated on the fly.

Each entry maps a file name to the expected outcome: None for "decodes and matches the
reference", or the error category its row must carry.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import exif_rotated_jpeg, smooth_image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (never decodable cheaply)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows of zeros; the rest is missing
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def write_catalogue(folder: Path, seed: int = 3) -> dict[str, str | None]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def photo(h, w):
        return Image.fromarray(smooth_image(rng, h, w))

    expected: dict[str, str | None] = {}

    def put(name: str, data: bytes, outcome: str | None) -> None:
        (folder / name).write_bytes(data)
        expected[name] = outcome

    put("zero_bytes.jpg", b"", "empty_file")
    put("truncated.jpg", _encode(photo(300, 400), "JPEG")[:3000], "decode_error")
    put("random_bytes.jpg", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "decode_error")
    put("text.png", b"hello, I am a text file and not a PNG\n" * 10, "decode_error")
    put("png_named.jpg", _encode(photo(200, 300), "PNG"), None)
    put("cmyk.jpg", _encode(photo(240, 320).convert("CMYK"), "JPEG"), None)
    gray16 = (smooth_image(rng, 180, 220)[..., 0].astype(np.uint16) * 257 + rng.integers(0, 257, (180, 220))).astype(
        np.uint16
    )
    put("gray16.png", _encode(Image.fromarray(gray16), "PNG"), None)
    pal = photo(200, 260).quantize(32)
    put("palette_transparent.png", _encode(pal, "PNG", transparency=0), None)
    rgba = np.concatenate([smooth_image(rng, 150, 210), rng.integers(0, 256, (150, 210, 1), dtype=np.uint8)], -1)
    put("rgba.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG"), None)
    put("one_pixel.png", _encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"), None)
    put("bomb.png", bomb_png(), "too_large")
    frames = [photo(120, 160).convert("P") for _ in range(3)]
    put("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50), None)
    pages = [photo(140, 180) for _ in range(3)]
    put("multipage.tiff", _encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]), None)
    put("image.webp", _encode(photo(210, 280), "WEBP", quality=90), None)
    put("exif_rotated.jpg", exif_rotated_jpeg(smooth_image(rng, 200, 300), orientation=8), None)
    put("with space ünïcødé 画像.jpg", _encode(photo(190, 250), "JPEG"), None)
    (folder / "a_directory.jpg").mkdir()
    expected["a_directory.jpg"] = "read_error"
    os.symlink(folder / "gone.jpg", folder / "dangling_link.jpg")
    expected["dangling_link.jpg"] = "not_found"
    expected["never_existed.jpg"] = "not_found"
    return expected


def reference_rgb(path: Path) -> Image.Image:
    """Independent reference decode: EXIF orientation, 16-bit scaled to 8, then Pillow RGB."""
    from PIL import ImageOps

    with Image.open(path) as opened:
        img: Image.Image = ImageOps.exif_transpose(opened)
        if img.mode.startswith("I"):
            arr = np.round(np.asarray(img, dtype=np.float64) / 257.0).astype(np.uint8)
            return Image.fromarray(arr, "L").convert("RGB")
        if img.mode == "P":
            img = img.convert("RGBA")
        return img.convert("RGB")
