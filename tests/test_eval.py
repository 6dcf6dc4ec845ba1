"""eval: exact top-1/top-5 on generated labeled folders, in every ImageNet layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
import torchvision.models as tvm
from PIL import Image

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.errors import UsageError
from resnet_batch.review.evaluate import label_from_path, published_errors, wilson_interval, wnid_to_index
from resnet_batch.run.job import run_eval

from .conftest import smooth_image

# Every image is predicted 999 first, then 998..995 (zero fc weights, ordered bias).
TOP5 = [999, 998, 997, 996, 995]
LABELS = [999, 999, 999, 997, 995, 0, 1, 2, 3, 4]  # 3 top-1 hits, 2 more top-5 hits, 5 misses


@pytest.fixture(scope="module")
def known_checkpoint(tmp_path_factory):
    model = tvm.resnet18()
    torch.nn.init.zeros_(model.fc.weight)
    with torch.no_grad():
        model.fc.bias.copy_(torch.linspace(-1, 1, 1000))
    path = tmp_path_factory.mktemp("known") / "known.pth"
    torch.save(model.state_dict(), path)
    return path


def write_images(root, layout: str) -> list[tuple[str, int]]:
    rng = np.random.default_rng(11)
    wnids = {i: w for w, i in wnid_to_index().items()}
    items = []
    for n, label in enumerate(LABELS):
        if layout == "folders":
            path = root / wnids[label] / f"img{n}.jpg"
        else:
            path = root / f"{wnids[label]}_{n}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(rng, 120, 150)).save(path, format="JPEG")
        items.append((str(path), label))
    return items


def check(report, summary, out):
    assert summary.complete
    assert (report.scored, report.unreadable) == (len(LABELS), 1)
    assert report.top1_errors == 7 and report.top5_errors == 5
    assert report.top1() == pytest.approx(70.0) and report.top5() == pytest.approx(50.0)
    # Per class, worst top-1 error first: the five never in the top 5, then 995 and 997 (top-5
    # hits), then 999, right three times out of three.
    assert report.per_class[999] == (3, 0, 0) and report.per_class[997] == (1, 1, 0)
    assert report.per_class[0] == (1, 1, 1)
    rows = [line.split() for line in report.worst_classes()[2:]]
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4", "995", "997", "999"]
    assert rows[0][1] == "tench" and rows[0][-2:] == ["100.0%", "100.0%"]
    assert rows[5][-2:] == ["100.0%", "0.0%"] and rows[-1][-3:] == ["3", "0.0%", "0.0%"]
    table = pq.read_table(out)
    assert "label" in table.column_names and table.num_rows == len(LABELS) + 1
    for row in table.to_pylist():
        if row["error"] is None:
            assert row["topk_ids"] == TOP5


@pytest.mark.parametrize("layout", ["folders", "filenames", "manifest"])
def test_eval_layouts(ray_local, known_checkpoint, tmp_path, layout):
    root = tmp_path / "data"
    items = write_images(root, "folders" if layout == "folders" else "filenames")
    broken = root / "n01440764_broken.JPEG"
    broken.write_bytes(b"not a jpeg")
    inputs, label_column = [root], None
    if layout == "manifest":
        # A manifest's labels may be class indices or WordNet ids, row by row: both kinds here.
        wnids = {i: w for w, i in wnid_to_index().items()}
        values = [str(lab) if n % 2 else wnids[lab] for n, (_, lab) in enumerate(items)]
        manifest = tmp_path / "labels.csv"
        pacsv.write_csv(pa.table({"file": [p for p, _ in items] + [str(broken)], "cls": values + ["0"]}), manifest)
        inputs, label_column = [manifest], "cls"
    cfg = LabelConfig.of(
        inputs=tuple(map(str, inputs)),
        output=str(tmp_path / "out"),
        model="resnet18",
        weights=str(known_checkpoint),
        precision="fp32",
        batch_size=4,
        path_column="file" if label_column else "path",
    )
    summary, report = run_eval(cfg, label_column)
    check(report, summary, tmp_path / "out")
    text = "\n".join(report.lines())
    assert "70.00%" in text and "50.00%" in text and "resnet18 30.24/10.92" in text


def test_unlabeled_inputs_are_refused(ray_local, tmp_path, known_checkpoint):
    (tmp_path / "cats").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "cats" / "a.jpg")
    cfg = LabelConfig.of(
        inputs=(str(tmp_path / "cats"),), output=str(tmp_path / "o"), model="resnet18", weights=str(known_checkpoint)
    )
    with pytest.raises(UsageError, match="no ImageNet label"):
        run_eval(cfg)


def test_label_parsing_and_published_figures():
    mapping = wnid_to_index()
    assert len(mapping) == 1000 and mapping["n01440764"] == 0 and mapping["n15075141"] == 999
    assert label_from_path("/x/n01443537/img.jpg") == 1
    assert label_from_path("/x/n01484850_great_white.JPEG") == 2
    assert label_from_path("/x/cat.jpg") is None
    meta = tvm.ResNet50_Weights.IMAGENET1K_V2.meta["_metrics"]["ImageNet-1K"]
    assert published_errors("resnet50", "IMAGENET1K_V2") == pytest.approx((100 - meta["acc@1"], 100 - meta["acc@5"]))
    assert published_errors("resnet50", "DEFAULT") == published_errors("resnet50", "IMAGENET1K_V2")
    v1 = tvm.ResNet18_Weights.IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]
    assert published_errors("resnet18", "IMAGENET1K_V1") == pytest.approx((100 - v1["acc@1"], 100 - v1["acc@5"]))
    assert published_errors("resnet18", "/some/checkpoint.pth") is None


def test_wilson_interval():
    lo, hi = wilson_interval(7, 10)
    assert lo < 70 < hi and 35 < lo < 40 and 89 < hi < 92
    lo, hi = wilson_interval(0, 1000)
    assert lo == 0 and hi < 0.5
