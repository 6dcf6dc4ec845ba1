"""--decode gpu: JPEG bytes decoded, resized and cropped in the model actor, batched.

The batched resize is checked pixel for pixel against the PIL reference geometry; the
whole path's embeddings against the CPU path's (torchvision's CPU decoder here, nvJPEG in
the gpu-marked test on the device machine).
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from resnet_batch.cli.summary_text import summary_lines
from resnet_batch.config.label_config import LabelConfig
from resnet_batch.config.plan import decodes_on_device
from resnet_batch.core.columns import OutputColumns
from resnet_batch.data.decode import JPEG_COLUMN, PIXELS_COLUMN, DecodeStage, JpegHandoff
from resnet_batch.data.preprocessing import DEVICE_FILTERS, GPU_DECODERS, Preprocessing, resize_center_crop
from resnet_batch.device import resize
from resnet_batch.device.decoders import DeviceDecoder, NvJpeg
from resnet_batch.device.resize import resize_crop
from resnet_batch.model.inference import Predictor
from resnet_batch.model.phases import EVENTS, PHASES
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights
from resnet_batch.run.job import run_label
from tests.conftest import smooth_image

# (height, width): landscape, portrait, a strip, smaller than the crop (padded), exactly the
# crop, exactly the resize (no resampling), odd sizes, and a large photo.
SHAPES = [(375, 500), (500, 375), (900, 120), (40, 60), (224, 224), (256, 256), (300, 301), (1200, 1600)]


@pytest.mark.parametrize("interpolation", DEVICE_FILTERS)
def test_batched_resize_crop_matches_pil(interpolation, monkeypatch):
    """Within a grey level of Pillow, whatever the shapes in a batch, and the same whether
    the batch is one chunk or several."""
    assert tuple(resize.FILTERS) == DEVICE_FILTERS  # what the driver routes by is what is here
    prep = Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), interpolation)
    rng = np.random.default_rng(3)
    images = [smooth_image(rng, h, w) for h, w in SHAPES]
    decoder = DeviceDecoder(prep, torch.device("cpu"), NvJpeg(torch.device("cpu")))
    crops = resize_crop([torch.from_numpy(img).permute(2, 0, 1).contiguous() for img in images], prep, torch.float32)
    for img, crop in zip(images, crops.numpy(), strict=False):
        ref = resize_center_crop(Image.fromarray(img), prep).astype(int)
        diff = np.abs(ref - crop.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, (img.shape, diff.max(), diff.mean())

    jpegs = [_jpeg(img) for img in images]
    whole = decoder(jpegs)
    monkeypatch.setattr(resize, "CHUNK_PIXELS", 600 * 600)  # forces several chunks
    chunked = decoder(jpegs)
    assert whole.ok == chunked.ok and sorted(whole.ok) == list(range(len(jpegs))) and not whole.errors
    assert torch.equal(whole.crops, chunked.crops)


VIEWS = {"aten::view", "aten::reshape", "aten::as_strided", "aten::slice", "aten::narrow"}


def test_resize_is_a_fixed_handful_of_ops():
    """The batched resize runs the same ops for 3 images as for 24: nothing per image but
    views (no kernels: the concatenation reads each image through one)."""
    prep = resolve_weights("resnet18", "none").preprocessing
    rng = np.random.default_rng(5)
    images = [
        torch.from_numpy(smooth_image(rng, *SHAPES[i % len(SHAPES)])).permute(2, 0, 1).contiguous() for i in range(24)
    ]

    def ops(batch):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            resize_crop(batch, prep, torch.float32)
        return sorted(event.name for event in prof.events() if event.name not in VIEWS)

    few, many = ops(images[:3]), ops(images)
    assert few == many, (len(few), len(many))


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90, **options)
    return buf.getvalue()


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
        ),
    ],
)
def test_routing_and_errors(device, tmp_path, reference_images):
    """JPEGs the device decodes as the CPU path would travel as bytes; everything else is
    decoded by the CPU stage, and only its crop travels. A corrupt JPEG that reaches the
    device decoder costs its row only.

    Whether Pillow opens the corrupt file's header (and so routes it to the device) depends
    on Pillow's version: its bytes are put in the JPEG column here, so the device decoder
    sees them whatever the routing did (the H200's Pillow kept it on the CPU)."""
    prep = resolve_weights("resnet18", "none").preprocessing
    corrupt = tmp_path / "corrupt.jpg"
    good = reference_images[0].read_bytes()
    corrupt.write_bytes(good[:400] + bytes(2000) + b"\xff\xd9")  # ends like a JPEG, is not one
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[:600])
    paths = [str(p) for p in reference_images] + [str(corrupt), str(truncated), str(tmp_path / "missing.jpg")]
    out = DecodeStage(prep, handoff=JpegHandoff())({"path": np.array(paths, dtype=object)})
    assert "image" not in out  # no zeros shipped for JPEG rows
    on_device = {p.rsplit("/", 1)[1] for p, b in zip(paths, out[JPEG_COLUMN], strict=False) if b}
    assert on_device - {"corrupt.jpg"} == {
        "landscape.jpg",
        "tall_narrow.jpg",
        "square.jpeg",
        "gray.jpg",
        "progressive.jpg",
    }  # not: cmyk.jpg, exif_rotated.jpg, truncated.jpg, PNGs
    for pixels, jpeg, error in zip(out[PIXELS_COLUMN], out[JPEG_COLUMN], out["error"], strict=False):
        assert (len(pixels) == 3 * 224 * 224) == (not jpeg and not error)
    at = paths.index(str(corrupt))
    out[JPEG_COLUMN][at], out[PIXELS_COLUMN][at], out["error"][at] = corrupt.read_bytes(), b"", ""

    predictor = Predictor(
        InferenceSettings(weights=resolve_weights("resnet18", "none"), top_k=1, device=device, gpu_decoder="auto"),
        schema=OutputColumns(512).schema(),
    )
    table = predictor(out).to_pydict()
    errors = dict(zip([p.rsplit("/", 1)[1] for p in table["path"]], table["error"], strict=False))
    assert errors["corrupt.jpg"].startswith("decode_error: ")
    assert errors["truncated.jpg"].startswith("decode_error: ")
    assert errors["missing.jpg"].startswith("not_found: ")
    assert sum(e is not None for e in errors.values()) == 3


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_cpu_decode_share(share, reference_images):
    """--cpu-decode-share: that share of a block's device-decodable JPEGs is decoded by the
    CPU task (its crop travels), the rest travel as bytes."""
    prep = resolve_weights("resnet18", "none").preprocessing
    paths = np.array([str(reference_images[0])] * 40, dtype=object)  # landscape.jpg: device-decodable
    out = DecodeStage(prep, handoff=JpegHandoff(share))({"path": paths})
    on_cpu = sum(bool(p) for p in out[PIXELS_COLUMN])
    assert on_cpu + sum(bool(b) for b in out[JPEG_COLUMN]) == 40
    assert abs(on_cpu - share * 40) <= 1


def check_device_path_matches_cpu_path(
    device: str, model: str, ckpt, reference_images, min_cosine: float, decoder: str = "auto"
):
    """Embeddings and top-1 through the device path against the exact CPU path."""
    resolved = resolve_weights(model, str(ckpt))
    paths = np.array([str(p) for p in reference_images], dtype=object)
    reference = DecodeStage(resolved.preprocessing)({"path": paths})
    deferred = DecodeStage(resolved.preprocessing, handoff=JpegHandoff())({"path": paths})
    assert sum(bool(b) for b in deferred[JPEG_COLUMN]) >= 5
    width = 512 if model == "resnet18" else 2048
    predictor = Predictor(
        InferenceSettings(weights=resolved, precision="fp32", top_k=3, device=device, gpu_decoder=decoder),
        schema=OutputColumns(width).schema(),
    )
    want, got = predictor(reference).to_pylist(), predictor(deferred).to_pylist()
    for ref, dev in zip(want, got, strict=False):
        assert (
            ref["error"] is None
            and dev["error"] is None
            and (ref["width"], ref["height"]) == (dev["width"], dev["height"])
        )
        a, b = torch.tensor(dev["embedding"]), torch.tensor(ref["embedding"])
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) >= min_cosine, ref["path"]


def test_device_path_matches_cpu_path(reference_images, resnet18_ckpt):
    check_device_path_matches_cpu_path("cpu", "resnet18", resnet18_ckpt, reference_images, 0.995)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("decoder", GPU_DECODERS)
@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
def test_gpu_decoder_path_matches_cpu_path(model, decoder, reference_images, resnet18_ckpt, resnet50_ckpt):
    """The whole reference set, each GPU decoder and the batched resize: cosine >= 0.995."""
    if decoder == "nvimgcodec":
        pytest.importorskip("nvidia.nvimgcodec")
    ckpt = resnet18_ckpt if model == "resnet18" else resnet50_ckpt
    check_device_path_matches_cpu_path("cuda", model, ckpt, reference_images, 0.995, decoder)


def test_decode_auto_picks_the_device_only_where_it_pays():
    cfg = LabelConfig.of(inputs=("x",), output="y", model="resnet18", weights="none")
    resolved = resolve_weights("resnet18", "none")
    assert cfg.execution.decode == "auto"
    assert decodes_on_device(cfg, resolved, on_gpu=True)
    assert not decodes_on_device(cfg, resolved, on_gpu=False)
    assert not decodes_on_device(cfg.replace(decode="cpu"), resolved, on_gpu=True)
    assert not decodes_on_device(cfg.replace(crop="none"), resolved, on_gpu=True)
    assert decodes_on_device(cfg.replace(decode="gpu"), resolved, on_gpu=False)


def test_job_with_device_decode(ray_local, reference_images, tmp_path):
    """Through Ray Data: byte columns cross the object store, every input has its row."""
    cfg = LabelConfig.of(
        inputs=(str(reference_images[0].parent),),
        output=str(tmp_path / "out"),
        model="resnet18",
        weights="none",
        decode="gpu",
        batch_size=4,
    )
    summary = run_label(cfg)
    assert summary.complete and sum(summary.errors.values()) == 0
    table = pq.read_table(tmp_path / "out")
    assert table.num_rows == len(reference_images) and table.column("embedding").null_count == 0
    # The actor's start, phase by phase, and the share the measured rates set (auto).
    (start,) = summary.timeline.actor_phases
    assert set(start["seconds"]) == set(PHASES) and set(start["at"]) == set(EVENTS)
    assert start["started"] <= start["at"]["first block in"] <= start["at"]["first forward out"]
    d = summary.timeline.decoding
    assert not d["fixed"] and d["forward_ms"] > 0 and d["device_decode_ms"] > 0 and d["cpu_decode_ms"] > 0
    rule = (
        d["cores"]
        * (d["forward_ms"] + d["device_decode_ms"])
        / (d["cpu_decode_ms"] + d["cores"] * d["device_decode_ms"])
    )
    assert d["share"] == pytest.approx(min(1.0, rule), abs=0.01)
    assert any(line.startswith("model actor start (first of 1): imports ") for line in summary_lines(summary))
