"""The check a model actor makes of its device JPEG path before the first batch.

The whole path (copy in, decode, resize, crop) runs once on a set of varied JPEGs, made
here: colour and grey, 4:2:0 and 4:4:4 chroma, progressive, restart markers, odd sizes,
smaller than the crop. Each crop is compared with the CPU path's (data/decode.py, Pillow,
the reference geometry). A device path that raises, drops an image or differs by more than
MAX_MEAN_DIFF grey levels on average is not used: the actor decodes on its CPU instead
(feed.DeviceFeed.check), and the job says so. On a GPU the decoder must also pass a few
trials of the write-before-read hazard (hazard.py), behind its barrier, on a busy stream:
the check images alone decode on an idle one, where the hazard cannot show.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..core.errors import one_line
from ..data.decode import decode_checked
from ..data.preprocessing import Preprocessing
from .hazard import corruption_trials, decoded_sizes

if TYPE_CHECKING:
    from .decoders import DeviceCrops, DeviceDecoder


# nvJPEG's IDCT and the float resize move some pixels by a grey level or two, the average by
# less than one; a wrong decode (colour order, chroma, geometry) moves it by tens.
MAX_MEAN_DIFF = 1.0

HAZARD_TRIALS = 4  # each queues HAZARD_BUSY_MS of work first: the warm-up pays ~0.1 s
HAZARD_BUSY_MS = 25.0

# (name, width, height, grey, Pillow's JPEG options)
CHECK_IMAGES: list[tuple[str, int, int, bool, dict]] = [
    ("baseline 4:2:0", 500, 375, False, {}),
    ("4:4:4", 301, 217, False, {"subsampling": 0}),
    ("progressive", 375, 500, False, {"progressive": True}),
    ("restart markers", 320, 240, False, {"restart_marker_blocks": 4}),
    ("grey", 240, 320, True, {}),
    ("smaller than the crop", 60, 40, False, {}),
    ("a strip", 1023, 97, False, {"subsampling": 1}),
]


def check_jpegs() -> list[tuple[str, bytes]]:
    """The check images: smooth gradients with detail, so that colour and geometry errors show."""
    out = []
    for name, width, height, grey, options in CHECK_IMAGES:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        rgb = np.stack([255 * x / width, 255 * y / height, 127 + 100 * np.sin((x + 2 * y) / 9)], axis=-1)
        image = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
        buf = io.BytesIO()
        (image.convert("L") if grey else image).save(buf, format="JPEG", quality=90, **options)
        out.append((f"{name} {width}x{height}", buf.getvalue()))
    return out


def device_path_error(decoder: Callable[[list[bytes]], DeviceCrops], prep: Preprocessing) -> str | None:
    """None when `decoder` (jpegs -> decoders.DeviceCrops) crops every check image as the CPU
    path does; otherwise what went wrong, in one line."""
    jpegs = check_jpegs()
    try:
        result = decoder([data for _, data in jpegs])
        crops = result.crops.cpu().numpy()
    except Exception as exc:
        return f"{type(exc).__name__}: {one_line(exc, 200)}"
    for index, error in sorted(result.errors.items()):
        return f"could not decode the {jpegs[index][0]} check image ({error})"
    if sorted(result.ok) != list(range(len(jpegs))) or crops.shape[1:] != (3, prep.crop_size, prep.crop_size):
        return f"returned crops of shape {tuple(crops.shape)} for images {result.ok}"
    for index, crop in sorted(zip(result.ok, crops, strict=False), key=lambda pair: pair[0]):
        name, data = jpegs[index]
        want = decode_checked(data, prep).pixels
        if want is None:
            return f"the CPU path could not decode the {name} check image"
        diff = float(np.abs(crop.astype(np.int16) - want.astype(np.int16)).mean())
        if diff > MAX_MEAN_DIFF:
            return (
                f"its crop of the {name} check image differs from the CPU path's by {diff:.1f} grey "
                f"levels on average (at most {MAX_MEAN_DIFF})"
            )
    return None


def hazard_error(decoder: DeviceDecoder) -> str | None:
    """None when `decoder`, behind its barrier, left every tensor still being read intact in
    HAZARD_TRIALS trials on a busy stream (hazard.py); otherwise how many it corrupted."""
    jpegs = [data for _, data in check_jpegs()]
    try:
        found = corruption_trials(
            decoder.decode, decoder.device, jpegs, decoded_sizes(jpegs), HAZARD_TRIALS, HAZARD_BUSY_MS
        )
    except Exception as exc:
        return f"{type(exc).__name__}: {one_line(exc, 200)}"
    if found.corrupted:
        return f"it wrote into memory still being read ({found} trials, behind the barrier)"
    return None
