"""Decode stage alone (no Ray): the bad-input catalogue row by row, and exact preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import ResNet18_Weights, ResNet50_Weights

from resnet_batch.data.decode import DecodeStage, ImageError, decode_rgb
from resnet_batch.data.preprocessing import Preprocessing, resize_center_crop
from resnet_batch.model.weights import resolve_weights

from .inputs_catalogue import bomb_png, reference_rgb, write_catalogue


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalogue")
    return folder, write_catalogue(folder)


def normalised(pixels: np.ndarray, weights) -> torch.Tensor:
    prep = weights.transforms()
    x = torch.from_numpy(pixels).float().div(255.0)
    mean, std = torch.tensor(prep.mean).view(3, 1, 1), torch.tensor(prep.std).view(3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("weights", [ResNet18_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2])
def test_catalogue_rows(catalogue, weights):
    """Our recipe for the release (registry.py's table) against the release's own transforms()."""
    folder, expected = catalogue
    names = sorted(expected)
    model = "resnet18" if weights in ResNet18_Weights else "resnet50"
    prep = resolve_weights(model, weights.name, verify=False).preprocessing
    stage = DecodeStage(prep, max_pixels=50_000_000, io_threads=2)
    out = stage({"path": np.array([str(folder / n) for n in names], dtype=object)})
    assert out["image"].shape == (len(names), 3, 224, 224) and out["image"].dtype == np.uint8
    for i, name in enumerate(names):
        error = out["error"][i]
        if expected[name] is None:
            assert error == "", (name, error)
            ref = reference_rgb(folder / name)
            assert (out["width"][i], out["height"][i]) == ref.size, name
            # Bit-exact against torchvision's own preset on the reference PIL image.
            torch.testing.assert_close(
                normalised(out["image"][i], weights), weights.transforms()(ref), rtol=0, atol=1e-6, msg=name
            )
        else:
            assert error.split(":")[0] == expected[name], (name, error)
            assert len(error) < 300 and "\n" not in error
            assert not out["image"][i].any(), name


def test_bomb_refused_before_allocation():
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(ImageError) as info:
        decode_rgb(bomb_png(200_000, 200_000), max_pixels=100_000_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info.value.category == "too_large"
    assert "200000x200000" in str(info.value) or "pixels" in str(info.value)
    assert peak < 50_000_000  # the image itself would need 40 GB


def test_pixel_limit_is_configurable():
    from PIL import Image

    from .inputs_catalogue import _encode

    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    assert decode_rgb(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageError, match="too_large: 100x100 pixels exceeds the limit of 9999"):
        decode_rgb(data, max_pixels=9_999)


def test_sixteen_bit_scaled_not_clipped(catalogue):
    folder, _ = catalogue
    from PIL import Image

    with Image.open(folder / "gray16.png") as img:
        raw = np.asarray(img).astype(np.float64)
    rgb = np.asarray(decode_rgb((folder / "gray16.png").read_bytes(), 10**8))
    assert rgb.shape[2] == 3 and (rgb[..., 0] == rgb[..., 2]).all()
    np.testing.assert_array_equal(rgb[..., 0], np.round(raw / 257).astype(np.uint8))
    assert rgb.min() < 100  # clipping 16-bit values would make nearly everything 255


@pytest.mark.parametrize(
    "resize, crop, interpolation", [(256, 224, "bilinear"), (232, 224, "bilinear"), (200, 224, "bicubic")]
)
def test_geometry_equals_torchvision_on_odd_sizes(resize, crop, interpolation):
    """PIL-only resize + crop equals torchvision's F.resize + F.center_crop, padding included."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    rng = np.random.default_rng(resize)
    prep = Preprocessing(resize, crop, (0.0,) * 3, (1.0,) * 3, interpolation)
    for width, height in [(1, 1), (1, 700), (223, 224), (201, 999), *rng.integers(1, 800, (40, 2)).tolist()]:
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        ref = F.center_crop(F.resize(img, [resize], interpolation=InterpolationMode(interpolation)), [crop])
        np.testing.assert_array_equal(
            resize_center_crop(img, prep), np.asarray(ref).transpose(2, 0, 1), err_msg=f"{width}x{height}"
        )


def test_decode_stage_does_not_import_torch():
    """Decode workers unpickle DecodeStage; torch's import would cost each of them seconds."""
    import subprocess
    import sys

    code = (
        "import sys, pickle, resnet_batch.data.decode as d; "
        "pickle.loads(pickle.dumps(d.LowPriorityDecode)); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def _png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "width, height", [(2400, 32), (32, 2400), (5000, 2), (2, 5000), (640, 480), (300, 301), (1000, 499), (1000, 501)]
)
def test_scale_maps_both_axes_within_one_resized_pixel(width, height):
    """--crop none: `scale` maps an original pixel to the resized image within one resized
    pixel on both axes, for every aspect ratio (the longer side capped or not), checked on
    the pixels the resize produced: a white band over the last quarter of each axis."""
    from resnet_batch.core.columns import IMAGE, SCALE
    from resnet_batch.data.decode import RESIZED_COLUMNS
    from resnet_batch.data.manifests import INLINE_BYTES
    from resnet_batch.data.preprocessing import WholeImage

    prep = Preprocessing(256, 224, (0.0,) * 3, (1.0,) * 3, "bilinear")
    for axis in (0, 1):  # the band across x, then across y
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        start = (width if axis == 0 else height) * 3 // 4
        if axis == 0:
            pixels[:, start:] = 255
        else:
            pixels[start:, :] = 255
        out = DecodeStage(prep, whole=WholeImage(256))(
            {"path": np.array(["band.png"], dtype=object), INLINE_BYTES: np.array([_png(pixels)], dtype=object)}
        )
        assert not out["error"][0], out["error"][0]
        resized_w, resized_h, scale = (
            int(out[RESIZED_COLUMNS[0]][0]),
            int(out[RESIZED_COLUMNS[1]][0]),
            float(out[SCALE][0]),
        )
        assert abs(width * scale - resized_w) < 1 and abs(height * scale - resized_h) < 1, (resized_w, resized_h, scale)
        image = out[IMAGE][0][0].astype(np.float64) / 255  # red channel, (H, W), padded
        line = image[0, :resized_w] if axis == 0 else image[:resized_h, 0]
        edge = line.size - line.sum()  # where the band starts, to a fraction of a resized pixel
        assert abs(edge - start * scale) < 1.0, (axis, edge, start * scale)
