"""Read and decode stage: path -> RGB -> resized, center-cropped uint8 CHW tensor.

The geometry is exactly torchvision's `ImageClassification` preset on a PIL image (PIL
resize, then center crop; preprocessing.py), without importing torch; only the float
conversion and normalisation are left to the model stage, so batches travel between
processes as uint8 (4x smaller than float32). With --decode gpu, JPEGs the device decodes
exactly as this path would travel as their bytes, and only the others are decoded here.
Every input yields one output row; failures become an `error` string "category: detail".
"""

from __future__ import annotations

import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..core.columns import ERROR, HEIGHT, IMAGE, INTERNAL_PREFIX, PATH, SCALE, WIDTH
from ..core.errors import ImageError
from ..core.reporting import DecodeReporter
from ..core.storage import StoreUnreachable
from .image_bytes import read_image_bytes, short_error
from .limits import (
    DECODE_TASK_BYTES,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DecodeMemory,
    Limits,
    decode_bytes,
    sample_bytes,
)
from .manifests import INLINE_BYTES, LIST_ERROR, TAR_OFFSET, TAR_SIZE
from .preprocessing import Preprocessing, WholeImage, check_resize, resize_center_crop, resize_pad

# --decode gpu: undecoded JPEG bytes for the device decoder (b"" = decoded here), and the
# crop's uint8 bytes where decoded here (b"" = a JPEG, or an error)
JPEG_COLUMN, PIXELS_COLUMN = f"{INTERNAL_PREFIX}jpeg", f"{INTERNAL_PREFIX}pixels"
# --crop none: the image's part of its padded tensor
RESIZED_COLUMNS = (f"{INTERNAL_PREFIX}resized_w", f"{INTERNAL_PREFIX}resized_h")

# A truncated file must fail loudly, never decode into grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# The pixel limit is --max-pixels alone, checked from the header before anything is
# decoded; Pillow's own (~89M, a warning, then an error at twice that) would override it.
Image.MAX_IMAGE_PIXELS = None


CONVERT_ROWS = 256  # 16- and 32-bit greys are scaled to 8 bits this many rows at a time


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, the way users' reference loaders do."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit int) grayscale: scale the full range to 8 bits instead of clipping,
        # a band of rows at a time (a float64 copy of the whole image costs 8 bytes a pixel).
        arr = np.asarray(img)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.empty(arr.shape, dtype=np.uint8)
        for top in range(0, arr.shape[0], CONVERT_ROWS):
            rows = arr[top : top + CONVERT_ROWS].astype(np.float64)
            grey[top : top + CONVERT_ROWS] = np.clip(np.rint(rows * (255.0 / peak)), 0, 255)
        del arr
        return Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # palette transparency must go through RGBA to be dropped cleanly
    return img.convert("RGB")


def decode_rgb(data: bytes, max_pixels: int) -> Image.Image:
    """Bytes -> RGB image with EXIF orientation applied; checks size before allocating."""
    return to_rgb_oriented(open_checked(data, max_pixels))


def open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """The image's header, checked: at most `max_pixels` 8-bit pixels (a 16-bit sample counts
    twice, a 32-bit one four times: what decoding holds grows with it), nothing decoded yet."""
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("decode_error", "not a recognised image format") from None
    except Exception as exc:
        raise ImageError("decode_error", short_error(exc)) from None
    width, height = img.size
    weight = sample_bytes(img.mode)
    if width * height * weight > max_pixels:
        if weight == 1:
            raise ImageError("too_large", f"{width}x{height} pixels exceeds the limit of {max_pixels}")
        raise ImageError(
            "too_large",
            f"{width}x{height} pixels of {8 * weight}-bit samples ({img.mode}) count as "
            f"{width * height * weight} 8-bit pixels, over the limit of {max_pixels}",
        )
    if width == 0 or height == 0:
        raise ImageError("decode_error", f"empty image {width}x{height}")
    return img


def to_rgb_oriented(img: Image.Image) -> Image.Image:
    """A checked image decoded, turned by its EXIF orientation, in 8-bit RGB."""
    try:
        img.seek(0)  # first frame of animations and multi-page files
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # not a copy: that cost ~0.4 ms per photo
        return to_rgb(img)
    except Exception as exc:
        raise ImageError("decode_error", short_error(exc)) from None


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray | None
    width: int | None
    height: int | None
    error: str | None
    jpeg: bytes | None = None  # left for the model's device to decode (--decode gpu)
    resized: tuple[int, int] = (0, 0)  # --crop none: (width, height) after resizing, before padding


def device_decodable_size(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) of a JPEG the device decoder gives exactly as the CPU path would, else None.

    Reads only the header, so the size limit holds without decoding anything. The rest
    take the CPU path: other formats, CMYK/YCCK JPEGs, EXIF orientations (nvJPEG ignores
    them), and files that do not end in an end-of-image marker (libjpeg rejects a
    truncated file; nvJPEG might decode it into grey).
    """
    if not data[-16:].rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    try:
        img = Image.open(io.BytesIO(data))
    except Exception:
        return None  # the CPU path names the error
    if img.format != "JPEG" or img.mode not in ("RGB", "L") or img.getexif().get(0x0112, 1) != 1:
        return None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError("too_large", f"{width}x{height} pixels exceeds the limit of {max_pixels}")
    return width, height


@dataclass(frozen=True)
class Source:
    """Where an image's bytes are: a file, a tar member, or bytes carried in the row
    (or, for a directory or shard a walk could not list, why there are none)."""

    path: str
    offset: int = -1
    size: int = -1
    inline: bytes | None = None
    list_error: str | None = None


def load_one(
    src: Source,
    prep: Preprocessing,
    limits: Limits,
    defer_jpeg: bool = False,
    whole: WholeImage | None = None,
) -> DecodedImage:
    """One input's row; `limits` bound what it may cost."""
    max_pixels = limits.max_pixels
    width = height = None
    if src.list_error:
        return DecodedImage(None, None, None, src.list_error)
    try:
        if src.inline is not None:
            data = src.inline
            if not data:
                raise ImageError("empty_file", "file has 0 bytes")
        else:
            data = read_image_bytes(src.path, src.offset, src.size, limits.max_bytes)
        size = device_decodable_size(data, max_pixels) if defer_jpeg else None
        if size is not None:
            check_resize(*size, prep, whole, max_pixels)
            return DecodedImage(None, size[0], size[1], None, jpeg=data)
        header = open_checked(data, max_pixels)
        width, height = header.size
        check_resize(width, height, prep, whole, max_pixels)
        with limits.holding(decode_bytes(width, height, header.mode)):
            img = to_rgb_oriented(header)
            width, height = img.size
            if whole is not None:
                pixels, resized_w, resized_h = resize_pad(img, prep, whole)
                return DecodedImage(pixels, width, height, None, resized=(resized_w, resized_h))
            return DecodedImage(resize_center_crop(img, prep), width, height, None)
    except ImageError as exc:
        return DecodedImage(None, width, height, str(exc))
    except StoreUnreachable:
        raise
    except MemoryError:
        return DecodedImage(None, width, height, "too_large: out of memory while decoding")
    except Exception as exc:  # a decoder bug must cost one row, not the job
        return DecodedImage(None, width, height, f"decode_error: {type(exc).__name__}: {short_error(exc)}")


def decode_checked(data: bytes, prep: Preprocessing) -> DecodedImage:
    """The CPU path for JPEG bytes a decode task already checked against --max-pixels (and
    passed on): what the device path falls back to, and what its check compares with."""
    return load_one(Source("", inline=data), prep, Limits(max_pixels=2**62, max_bytes=None))


@dataclass(frozen=True)
class JpegHandoff:
    """JPEGs passed on, as bytes, to the model actors' device decoder. `cpu_share` of them
    are decoded here all the same, so that a node's cores take part of the decoding off its
    GPU; None: the share is asked of the reporter at each block, which is told each block's
    CPU seconds."""

    cpu_share: float | None = 0.0
    reporter: DecodeReporter | None = None


class DecodeStage:
    """Batch callable: {"path": [...], ...} -> adds image, width, height, error.

    Files are fetched and decoded on a small thread pool: reads are I/O bound and
    Pillow's decoders release the GIL, so a few threads keep one task's core busy.
    """

    def __init__(
        self,
        prep: Preprocessing,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        io_threads: int = 4,
        whole: WholeImage | None = None,
        handoff: JpegHandoff | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        memory_bytes: int = DECODE_TASK_BYTES,
    ):
        self.prep = prep
        self.max_pixels, self.max_bytes, self.memory_bytes = max_pixels, max_bytes, memory_bytes
        self.io_threads = io_threads
        self.whole = whole  # --crop none: variable shapes, rows ordered by shape
        self.handoff = handoff

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sources = _sources(batch)
        deferred = self._deferred(len(sources))
        limits = Limits(self.max_pixels, self.max_bytes, DecodeMemory(self.memory_bytes))
        load = partial(self._timed_load, limits)
        if self.io_threads > 1 and len(sources) > 1:
            with ThreadPoolExecutor(min(self.io_threads, len(sources))) as pool:
                timed = list(pool.map(load, sources, deferred))
        else:
            timed = [load(s, d) for s, d in zip(sources, deferred, strict=False)]
        decoded = [d for d, _ in timed]
        handoff = self.handoff
        if handoff is not None and handoff.reporter is not None:
            on_cpu = [seconds for d, seconds in timed if d.pixels is not None]
            handoff.reporter.cpu_decoded(len(on_cpu), sum(on_cpu))
        out = {k: v for k, v in batch.items() if k not in (INLINE_BYTES, LIST_ERROR)}
        if handoff is not None:  # bytes only: a block of JPEGs carries no pixels, not even zeros
            out[JPEG_COLUMN] = np.array([d.jpeg or b"" for d in decoded], dtype=object)
            out[PIXELS_COLUMN] = np.array(
                [b"" if d.pixels is None else d.pixels.tobytes() for d in decoded], dtype=object
            )
        else:
            out[IMAGE] = self._images(decoded)
        out[WIDTH] = np.array([d.width if d.width is not None else -1 for d in decoded], dtype=np.int32)
        out[HEIGHT] = np.array([d.height if d.height is not None else -1 for d in decoded], dtype=np.int32)
        # "" = no error: an all-None object column would not survive Arrow conversion as strings.
        out[ERROR] = np.array([d.error or "" for d in decoded], dtype=object)
        if self.whole is not None:
            return self._whole_image_columns(out, decoded)
        return out

    def _images(self, decoded: list[DecodedImage]) -> np.ndarray:
        if self.whole is not None:  # one array per row, of its batch shape (an error row: the smallest)
            empty = np.zeros((3, self.whole.PAD, self.whole.PAD), dtype=np.uint8)
            rows = np.empty(len(decoded), dtype=object)
            rows[:] = [d.pixels if d.pixels is not None else empty for d in decoded]
            return rows
        size = self.prep.crop_size
        images = np.zeros((len(decoded), 3, size, size), dtype=np.uint8)
        for i, d in enumerate(decoded):
            if d.pixels is not None:
                images[i] = d.pixels
        return images

    def _whole_image_columns(self, out: dict[str, np.ndarray], decoded: list[DecodedImage]) -> dict[str, np.ndarray]:
        """Adds the resized sizes and scale, and orders the rows by batch shape, so that the
        model's batches (slices of this block) hold few shapes."""
        whole = self.whole
        assert whole is not None  # called with --crop none only
        out[RESIZED_COLUMNS[0]] = np.array([d.resized[0] for d in decoded], dtype=np.int32)
        out[RESIZED_COLUMNS[1]] = np.array([d.resized[1] for d in decoded], dtype=np.int32)
        out[SCALE] = np.array(
            [whole.scale(d.width or 0, d.height or 0) if d.pixels is not None else np.nan for d in decoded],
            dtype=np.float32,
        )
        order = sorted(range(len(decoded)), key=lambda i: out[IMAGE][i].shape)
        return {k: v[order] if isinstance(v, np.ndarray) else [v[i] for i in order] for k, v in out.items()}

    def _deferred(self, n: int) -> list[bool]:
        """Which rows may go to the device: all but `cpu_share` of them, spread evenly
        (a golden-ratio sequence), so every block and every batch gets its share."""
        handoff = self.handoff
        if handoff is None:
            return [False] * n
        share = handoff.cpu_share
        if share is None and handoff.reporter is not None:
            share = handoff.reporter.cpu_decode_share()
        return [(i * 0.6180339887) % 1.0 >= (share or 0.0) for i in range(n)]

    def _timed_load(self, limits: Limits, src: Source, defer_jpeg: bool) -> tuple[DecodedImage, float]:
        """The row, and this thread's CPU seconds for it (I/O waits are not counted)."""
        started = time.thread_time()
        decoded = load_one(src, self.prep, limits, defer_jpeg, self.whole)
        return decoded, time.thread_time() - started


def _sources(batch: dict[str, np.ndarray]) -> list[Source]:
    n = len(batch[PATH])
    offsets = batch.get(TAR_OFFSET, np.full(n, -1))
    sizes = batch.get(TAR_SIZE, np.full(n, -1))
    inline = batch.get(INLINE_BYTES, [None] * n)
    list_errors = batch.get(LIST_ERROR, [None] * n)
    return [
        Source(str(p), int(o), int(s), None if b is None else bytes(b), e or None)
        for p, o, s, b, e in zip(batch[PATH], offsets, sizes, inline, list_errors, strict=False)
    ]


class LowPriorityDecode(DecodeStage):
    """Decoding on the CPU time the model leaves idle, in Ray's worker processes.

    Under SCHED_IDLE, decoding (and the I/O threads it starts, which inherit the policy)
    runs only when a core would otherwise idle, e.g. while a model call waits for its next
    batch, instead of preempting a forward (BENCHMARKS.md, `bench/bench.py`).
    """

    def __call__(self, batch: dict[str, np.ndarray]):
        to_idle_priority()
        return super().__call__(batch)


def to_idle_priority() -> None:
    """This thread (and the threads it starts) under SCHED_IDLE, where Linux has it."""
    if hasattr(os, "SCHED_IDLE") and os.sched_getscheduler(0) != os.SCHED_IDLE:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
