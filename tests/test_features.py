"""Multi-scale and spatial features, whole-image geometry, and reading them back.

The reference is torchvision: `create_feature_extractor` on the same checkpoint, and its
own `Resize(size, max_size)` for the whole-image geometry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.models.feature_extraction import create_feature_extractor

from resnet_batch.config.description import MAX_FILE_BYTES, row_bytes, rows_per_file
from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.columns import SCALE
from resnet_batch.core.errors import UsageError
from resnet_batch.data.decode import RESIZED_COLUMNS, DecodeStage
from resnet_batch.data.preprocessing import WholeImage
from resnet_batch.model.network import Network
from resnet_batch.model.registry import STAGE_STRIDES
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import build_model, resolve_weights
from resnet_batch.output import features
from resnet_batch.run.job import run_label

from .conftest import reference_image, save_random_checkpoint, smooth_image

STAGES = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}
ALL = ("pooled", "c2", "c3", "c4", "c5")
ROOT = Path(__file__).resolve().parent.parent


def cosine(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a, np.float32)).flatten(), torch.as_tensor(np.asarray(b, np.float32)).flatten()
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def reference_features(resolved, x: torch.Tensor) -> dict[str, torch.Tensor]:
    extractor = create_feature_extractor(build_model(resolved), STAGES)
    with torch.no_grad():
        return extractor(x)


def network(resolved, spatial=None, whole_image=False, top_k=5) -> Network:
    settings = InferenceSettings(
        weights=resolved,
        precision="fp32",
        features=ALL,
        spatial=spatial,
        whole_image=WholeImage(resolved.preprocessing.resize_size) if whole_image else None,
        top_k=top_k,
    )
    return Network(settings)


@pytest.mark.parametrize("model", ["resnet18", "resnext50_32x4d"])
def test_stage_features_match_create_feature_extractor(tmp_path, reference_images, model):
    resolved = resolve_weights(model, str(save_random_checkpoint(model, tmp_path / "m.pth")))
    prep = resolved.preprocessing
    batch = DecodeStage(prep)({"path": np.array([str(p) for p in reference_images[:3]], dtype=object)})
    out = network(resolved, spatial="c4").predict(batch["image"])
    x = torch.from_numpy(batch["image"]).float().div(255)
    x = (x - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(prep.std).view(1, 3, 1, 1)
    ref = reference_features(resolved, x)
    for i in range(len(x)):
        for stage in ("c2", "c3", "c4", "c5"):
            assert cosine(out[stage][i], ref[stage][i].mean((1, 2))) >= 0.999, (model, stage)
        assert cosine(out["embedding"][i], ref["c5"][i].mean((1, 2))) >= 0.999
        assert out["spatial"][i].shape == (ref["c4"].shape[1], 14, 14) and out["spatial"].dtype == np.float16
        assert cosine(out["spatial"][i], ref["c4"][i]) >= 0.999


def test_whole_image_geometry_and_features_against_unpadded_reference(reference_images, resnet18_ckpt):
    """Resizing equals torchvision's Resize(size, max_size) pixel for pixel; features of the
    padded batch equal those of the image alone where no padding was needed, and stay close
    where it was (padding changes what border cells see)."""
    resolved = resolve_weights("resnet18", str(resnet18_ckpt))
    prep = resolved.preprocessing
    whole = WholeImage(prep.resize_size)
    batch = DecodeStage(prep, whole=whole)({"path": np.array([str(p) for p in reference_images], dtype=object)})
    resize = T.Resize(prep.resize_size, max_size=whole.max_size, antialias=True)
    model = network(resolved, spatial="c5", whole_image=True)
    for k, path in enumerate(batch["path"]):
        img = reference_image(Path(path))
        resized = T.PILToTensor()(resize(img))
        width, height = batch[RESIZED_COLUMNS[0]][k], batch[RESIZED_COLUMNS[1]][k]
        assert torch.equal(torch.from_numpy(batch["image"][k][:, :height, :width]), resized), path
        assert not batch["image"][k][:, height:].any() and not batch["image"][k][:, :, width:].any()
        scale = batch[SCALE][k]  # both axes: within one resized pixel
        assert abs(img.size[0] * scale - width) < 1 and abs(img.size[1] * scale - height) < 1, path
        x = T.Normalize(prep.mean, prep.std)(resized.float().div(255))[None]
        ref = reference_features(resolved, x)
        out = model.predict(batch["image"][k][None], np.array([[width, height]]))
        padded = batch["image"][k].shape[1:] != (height, width)
        for stage in ("c2", "c3", "c4", "c5"):
            assert cosine(out[stage][0], ref[stage][0].mean((1, 2))) >= (0.99 if padded else 0.99999), (path, stage)
        cells = ref["c5"].shape[-2:]
        assert cosine(out["spatial"][0][:, : cells[0], : cells[1]], ref["c5"][0]) >= (0.95 if padded else 0.9999)


def test_spatial_cell_maps_back_to_where_the_content_is(tmp_path, resnet18_ckpt):
    """A bright square on a flat 640x480 image: the cell that changes most, mapped back with
    the documented formula (original pixel = stride * cell / scale), lands on the square."""
    x0, y0 = 470, 130
    plain = np.full((480, 640, 3), 110, np.uint8)
    marked = plain.copy()
    marked[y0 - 20 : y0 + 20, x0 - 20 : x0 + 20] = 250
    paths = [tmp_path / "plain.png", tmp_path / "marked.png"]
    for path, pixels in zip(paths, (plain, marked), strict=False):
        Image.fromarray(pixels).save(path)
    resolved = resolve_weights("resnet18", str(resnet18_ckpt))
    batch = DecodeStage(resolved.preprocessing, whole=WholeImage(256))(
        {"path": np.array([str(p) for p in paths], dtype=object)}
    )
    sizes = np.stack([batch[c] for c in RESIZED_COLUMNS], axis=1)
    for stage in ("c4", "c5"):
        maps = (
            network(resolved, spatial=stage, whole_image=True, top_k=0)
            .predict(np.stack(list(batch["image"])), sizes)["spatial"]
            .astype(np.float32)
        )
        change = np.abs(maps[1] - maps[0]).sum(0)
        i, j = np.unravel_index(change.argmax(), change.shape)
        stride, scale = STAGE_STRIDES[stage], batch[SCALE][0]
        cell = stride / scale  # one cell in original pixels
        assert abs(stride * j / scale - x0) <= cell and abs(stride * i / scale - y0) <= cell, (stage, i, j)


@pytest.mark.parametrize(
    "values, needle",
    [
        (dict(features="pooled,c6"), "invalid --features value 'c6'; valid: pooled, c2, c3, c4, c5"),
        (dict(spatial="c3"), "invalid --spatial 'c3'; valid: c4, c5"),
        (dict(crop="left"), "invalid --crop 'left'; valid: center, none"),
        (dict(resize=320), "--resize applies to --crop none"),
        (dict(crop="none", decode="gpu"), "--decode gpu supports --crop center only"),
        (dict(top_k=0, features=""), "leaves nothing to compute"),
    ],
)
def test_bad_feature_options_are_one_line_errors(values, needle):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        LabelConfig.of(inputs=("x",), output="o", **values)


def two_classes(folder: Path, per_class: int = 12) -> None:
    """Warm smooth images and cold noisy ones, in ImageFolder layout, different sizes."""
    rng = np.random.default_rng(5)
    for name in ("warm", "cold"):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = int(rng.integers(90, 160)), int(rng.integers(90, 170))
            img = smooth_image(rng, h, w).astype(np.float32)
            if name == "warm":
                img[..., 0] = 0.5 * img[..., 0] + 120
            else:
                img[..., 2] = 0.5 * img[..., 2] + 120
                img += rng.normal(0, 30, img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name / f"{i}.jpg")


@pytest.fixture(scope="module")
def feature_job(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    two_classes(root / "images")
    (root / "labels.txt").write_text("\n".join(f"class {i}" for i in range(1000)) + "\n")
    cfg = LabelConfig.of(
        inputs=(str(root / "images"),),
        output=str(root / "out"),
        model="resnet18",
        weights="none",
        labels=str(root / "labels.txt"),
        features=("pooled", "c2", "c3", "c4", "c5"),
        spatial="c4",
        crop="none",
        resize=128,
        batch_size=8,
        top_k=2,
        precision="fp32",
    )
    summary = run_label(cfg)
    return root, summary


def test_feature_job_writes_readable_features(feature_job):
    root, summary = feature_job
    assert summary.complete and summary.inputs == 24
    table = pq.read_table(root / "out")
    meta = json.loads(table.schema.metadata[b"resnet_batch"])
    assert meta["features"] == ["pooled", "c2", "c3", "c4", "c5"] and meta["preprocessing"]["crop"] == "none"
    assert meta["spatial"]["stride"] == 16 and meta["spatial"]["shape"] is None
    assert table.column("topk_labels")[0].as_py()[0].startswith("class ")
    rows = 0
    for batch in features.read(str(root / "out"), batch_rows=5):
        n = len(batch["path"])
        rows += n
        assert batch["embedding"].shape == (n, 512) and batch["c2"].shape == (n, 64) and batch["c4"].shape == (n, 256)
        for spatial, shape, valid, scale in zip(
            batch["spatial_c4"], batch["spatial_shape"], batch["valid"], batch["scale"], strict=False
        ):
            assert spatial.dtype == np.float16 and spatial.shape == tuple(shape) and shape[0] == 256
            assert valid[0] == valid[1] == 0 and 0 < valid[2] <= shape[2] and 0 < valid[3] <= shape[1]
            assert min(valid[2:]) == 128 // 16 and scale > 0  # the shorter side, resized to 128
    assert rows == table.num_rows == 24


def test_part_files_stay_within_a_row_group_budget(feature_job):
    """The row-size bound that sizes part files holds for real rows; a resnet50 spatial_c5
    output gets files of at most 256 MB."""
    root, _ = feature_job
    cfg = LabelConfig.of(
        inputs=("x",), output="o", model="resnet18", weights="none", features=ALL, spatial="c4", crop="none", resize=128
    )
    resolved = resolve_weights("resnet18", "none")
    for part in (root / "out").glob("part-*.parquet"):
        meta = pq.ParquetFile(part).metadata
        assert meta.num_row_groups == 1
        assert meta.row_group(0).total_byte_size <= meta.num_rows * row_bytes(cfg.compute, resolved)
    big = LabelConfig.of(inputs=("x",), output="o", model="resnet50", weights="none", spatial="c5")
    rows = rows_per_file(big, resolve_weights("resnet50", "none"))
    assert rows * 2048 * 7 * 7 * 2 <= MAX_FILE_BYTES and rows < big.execution.rows_per_file


def test_features_stream_from_an_object_store(feature_job, s3_endpoint):
    import s3fs

    root, _ = feature_job
    fs = s3fs.S3FileSystem()
    fs.mkdir("features-bucket")
    fs.put(str(root / "out") + "/", "features-bucket/out/", recursive=True)
    local = {
        p: e
        for b in features.read(str(root / "out"), ["embedding"])
        for p, e in zip(b["path"], b["embedding"], strict=False)
    }
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "NumPy array is not writable" for Arrow's zero-copy arrays
        remote = list(features.read("s3://features-bucket/out", ["embedding", "width"], batch_rows=7, as_torch=True))
    assert sum(len(b["path"]) for b in remote) == len(local)
    for batch in remote:
        assert isinstance(batch["embedding"], torch.Tensor) and len(batch["path"]) <= 7
        for path, vector in zip(batch["path"], batch["embedding"], strict=False):
            np.testing.assert_array_equal(vector.numpy(), local[path])
    with pytest.raises(UsageError, match="holds no resnet-batch part files"):
        list(features.read(str(root / "images")))


def test_linear_probe_example_learns_the_classes(feature_job, tmp_path):
    root, _ = feature_job
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "linear_probe.py"),
            str(root / "out"),
            "--feature",
            "c3",
            "--save",
            str(tmp_path / "probe.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    held_out = float(result.stdout.split("held-out accuracy:")[1].split()[0])
    # 9 held-out rows on random-init features: at least 8 right (chance: 2% of the time)
    assert held_out >= 0.85, result.stdout
    saved = torch.load(tmp_path / "probe.pt", weights_only=True)
    assert saved["classes"] == ["cold", "warm"]
