"""Reviewing a labeled collection: review columns, the HTML report in a real browser,
exports, near-duplicates. One small real job output is shared by all of them."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
import torchvision.models as tvm

from resnet_batch.cli.summary_text import summary_lines
from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.errors import UsageError
from resnet_batch.review import neighbors
from resnet_batch.review.export import export
from resnet_batch.review.report import build_report
from resnet_batch.run.job import run_label

from .conftest import write_jpegs
from .helpers import found

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CLASSES = ("apple", "pear", "plum", "fig")


@pytest.fixture(scope="module")
def job(ray_local, tmp_path_factory):
    """A 4-class fine-tuned head (own class names), 16 images, 3 exact duplicates, 1 broken file."""
    root = tmp_path_factory.mktemp("review")
    images = root / "images"
    paths = write_jpegs(images / "a", 8, seed=11, height=120, width=160)
    write_jpegs(images / "b", 8, seed=12, height=150, width=110)
    for i in range(3):
        shutil.copy(paths[i], images / "b" / f"copy_{i}.jpg")
    (images / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    torch.manual_seed(3)
    model = tvm.resnet18(num_classes=len(CLASSES))
    torch.save({"state_dict": model.state_dict(), "classes": list(CLASSES)}, root / "fruit.pt")
    cfg = LabelConfig.of(
        inputs=(str(images),),
        output=str(root / "out"),
        model="resnet18",
        weights=str(root / "fruit.pt"),
        top_k=3,
        review_below=0.4,
        batch_size=8,
        precision="fp32",
    )
    summary = run_label(cfg)
    assert summary.inputs == 20 and summary.rows_in_output == 20
    return root, pq.read_table(root / "out")


def test_review_columns(job):
    _, table = job
    ok = table.filter(pc.is_null(table.column("error")))
    probs = np.array(ok.column("topk_probs").to_pylist())
    np.testing.assert_allclose(ok.column("margin").to_numpy(), probs[:, 0] - probs[:, 1], atol=1e-6)
    entropy = ok.column("entropy").to_numpy()
    assert ((entropy > 0) & (entropy <= np.log(len(CLASSES)) + 1e-5)).all()
    np.testing.assert_array_equal(ok.column("needs_review").to_numpy(), probs[:, 0] < 0.4)
    meta = json.loads(table.schema.metadata[b"resnet_batch"])
    assert meta["review"]["review_below"] == 0.4 and "entropy" in meta["review"]
    assert set(ok.column("topk_labels").to_pylist()[0]) <= set(CLASSES)


def test_neighbors_find_the_duplicates(job, tmp_path):
    root, table = job
    result, info = neighbors.find_neighbors(str(root / "out"), k=5, threshold=0.999)
    neighbors.write(result, info, str(tmp_path / "nn"))
    assert info.index.startswith("exact") and info.recall_at_k == 1.0
    rows = {r["path"]: r for r in pq.read_table(tmp_path / "nn" / "neighbors.parquet").to_pylist()}
    assert len(rows) == 19  # the broken file has no embedding
    for i in range(3):
        original, copy = str(root / "images" / "a" / f"img_{i:03d}.jpg"), str(root / "images" / "b" / f"copy_{i}.jpg")
        assert rows[copy]["neighbors"][0] == original and rows[copy]["similarities"][0] == pytest.approx(1, abs=1e-5)
        assert rows[copy]["group"] == rows[original]["group"] is not None
        assert rows[original]["path"] not in rows[original]["neighbors"]
    assert sum(r["group"] is not None for r in rows.values()) == 6
    groups = neighbors.largest_groups(str(tmp_path / "nn"), 10)
    assert sorted(len(g) for g in groups) == [2, 2, 2]


def test_ivf_index_reaches_the_target_recall():
    """The approximate index tunes nprobe until recall@10 >= 0.95 against exact search."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(300, 64))
    vectors = (centres[rng.integers(0, 300, 60_000)] + 0.6 * rng.normal(size=(60_000, 64))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index, info = neighbors.build_index(vectors, k=10, threshold=0.95)
    assert info.index.startswith("IVF") and info.recall_at_k >= neighbors.TARGET_RECALL
    sample = vectors[:200]
    exact = (sample @ vectors.T).argsort(1)[:, ::-1][:, :11]
    assert neighbors.recall(index.search(sample, 11)[1], exact) >= 0.9


def test_exports(job, tmp_path):
    root, table = job
    out = str(root / "out")
    ok = table.filter(pc.is_null(table.column("error")))
    flagged = int(pc.sum(ok.column("needs_review")).as_py())
    assert export(out, "label-studio", str(tmp_path / "tasks.json"), rows="review") == flagged
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert len(tasks) == flagged and all(
        t["predictions"][0]["result"][0]["value"]["choices"][0] in CLASSES for t in tasks
    )
    assert all(t["data"]["image"].startswith("/data/local-files/?d=") for t in tasks)
    config = (tmp_path / "tasks.label-config.xml").read_text()
    lss = pytest.importorskip("label_studio_sdk")
    from label_studio_sdk.label_interface import LabelInterface

    interface = LabelInterface(config)  # Label Studio's own parser of the config, tasks and predictions
    for task in tasks:
        lss.types.ImportApiRequest.model_validate(
            {**task, "predictions": [{**p, "task": 1} for p in task["predictions"]]}
        )
        assert interface.validate_task(task) is not False
        assert interface.validate_prediction(task["predictions"][0]) is True

    assert export(out, "csv", str(tmp_path / "rows.csv")) == ok.num_rows
    with open(tmp_path / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_path = {r["path"]: r for r in ok.to_pylist()}
    for row in rows:
        assert row["label"] == by_path[row["path"]]["topk_labels"][0]
        assert float(row["prob"]) == pytest.approx(by_path[row["path"]]["topk_probs"][0], abs=1e-6)

    assert export(out, "imagefolder", str(tmp_path / "tree")) == ok.num_rows
    files = sorted((tmp_path / "tree").rglob("*.jpg"))
    assert len(files) == ok.num_rows and {f.parent.name for f in files} <= set(CLASSES)
    assert all(f.is_symlink() and f.resolve().exists() for f in files)


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda out, tmp: export(out, "coco", str(tmp / "x.json")), "invalid --format 'coco'; valid: label-studio, "),
        (lambda out, tmp: export(str(tmp), "csv", str(tmp / "x.csv")), "is not a resnet-batch output"),
        (lambda out, tmp: build_report(str(tmp), str(tmp / "x.html")), "is not a resnet-batch output"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(job, tmp_path, call, needle):
    root, _ = job
    with pytest.raises(UsageError, match=needle):
        call(str(root / "out"), tmp_path)
    assert not [p for p in tmp_path.iterdir()], list(tmp_path.iterdir())


def test_neighbors_without_embeddings_is_refused(job, tmp_path):
    """On the job's output as --no-embeddings writes it: the same part files without the column."""
    root, _ = job
    (tmp_path / "out").mkdir()
    for part in (root / "out").glob("part-*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["embedding"]), tmp_path / "out" / part.name)
    result = subprocess.run(
        [sys.executable, "-m", "resnet_batch", "neighbors", str(tmp_path / "out"), "--output", str(tmp_path / "nn")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "has no embeddings" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "nn").exists()


def test_report_shows_where_the_time_went_and_rows_saved_over_time(job, tmp_path):
    import re

    root, _ = job
    page = tmp_path / "report.html"
    build_report(str(root / "out"), str(page))
    text = page.read_text()
    finished = json.loads((root / "out" / "_resnet_batch.json").read_text())["finished"]
    parts = sorted((root / "out").glob("part-*.parquet"), key=lambda p: p.stat().st_mtime)
    throughput = found(r'<svg id="throughput".*?</svg>', text).group(0)
    saved = [int(n) for n in re.findall(r"<title>\d+ s: (\d+) rows</title>", throughput)]
    assert saved == list(np.cumsum([pq.read_metadata(p).num_rows for p in parts])) and saved[-1] == 20
    legend = re.findall(r'<text class="legend" [^>]*>(.*?)</text>', text)
    assert [item.rsplit(" ", 2)[0] for item in legend] == ["start-up", "first batch", "steady", "shutdown"]
    for name, seconds in finished["phases"].items():
        assert f"{name} {seconds:.1f} s" in legend
    rate = finished["steady_images_per_s"]
    assert (f"steady rate {rate:.1f} images/s" in text) == (rate > 0)


@pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium); CI has it")
def test_report_in_a_real_browser(job, tmp_path):
    from playwright.sync_api import sync_playwright

    root, table = job
    nn = tmp_path / "nn"
    result, info = neighbors.find_neighbors(str(root / "out"), k=3, threshold=0.999)
    neighbors.write(result, info, str(nn))
    page_file = tmp_path / "report.html"
    review = build_report(str(root / "out"), str(page_file), neighbors=str(nn))
    assert page_file.stat().st_size < 2_000_000 and not list(tmp_path.glob(".resnet-batch-*"))
    errors_in_table = table.filter(pc.is_valid(table.column("error"))).num_rows
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        problems = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on(
            "request",
            lambda r: problems.append(f"fetched {r.url}") if not r.url.startswith(("file:", "data:")) else None,
        )
        page.goto(page_file.as_uri())
        assert int(page.inner_text("#count-inputs")) == table.num_rows
        assert int(page.inner_text("#count-errors")) == errors_in_table == 1
        assert int(page.inner_text("#count-labeled")) == table.num_rows - errors_in_table
        assert int(page.inner_text("#count-classes")) == len(
            set(pc.list_element(table.filter(pc.is_null(table.column("error"))).column("topk_labels"), 0).to_pylist())
        )
        assert int(page.inner_text("#count-review")) == review.flagged
        assert "decode_error" in page.inner_text("#error-rows")
        assert page.is_visible("#phases") and page.is_visible("#throughput")
        assert page.locator("#throughput circle").count() == len(list((root / "out").glob("part-*.parquet")))
        first = page.locator("#classes a").first
        sheet = first.get_attribute("href") or "#no-href"
        assert not page.is_visible(sheet)
        first.click()
        assert page.is_visible(sheet)
        images = page.locator(f"{sheet} img")
        assert images.count() >= 1
        assert page.evaluate(f"[...document.querySelectorAll('{sheet} img')].every(i => i.naturalWidth > 0)")
        shot = page.screenshot(full_page=True)
        browser.close()
    assert not problems, problems
    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"))
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text and thumbnails, not a blank page


@pytest.fixture(scope="module")
def resumed(ray_local, tmp_path_factory):
    """An output of two runs with random weights: 12 images, then 6 more labeled by a resume."""
    root = tmp_path_factory.mktemp("resumed")
    write_jpegs(root / "in" / "a", 12, seed=21)
    cfg = LabelConfig.of(
        inputs=(str(root / "in"),),
        output=str(root / "out"),
        model="resnet18",
        weights="none",
        precision="fp32",
        batch_size=4,
        rows_per_file=4,
    )
    first = run_label(cfg)
    write_jpegs(root / "in" / "b", 6, seed=22)
    second = run_label(cfg.replace(mode="resume"))
    assert first.complete and second.complete and second.processed == 6
    return root, (first, second)


@pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium); CI has it")
def test_the_reports_charts_read_right_in_a_browser(resumed, tmp_path):
    """The values a person reads off the charts: phases in time order with their seconds, the
    steady rate the summary printed, ticked axes with units, a line per run, and random
    weights said to be random."""
    from playwright.sync_api import sync_playwright

    root, (first, second) = resumed
    record = json.loads((root / "out" / "_resnet_batch.json").read_text())
    assert [r["processed"] for r in record["runs"]] == [12, 6]
    page_file = tmp_path / "report.html"
    build_report(str(root / "out"), str(page_file))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(page_file.as_uri())
        legend = page.locator("#phases-legend text").all_text_contents()
        assert [t.rsplit(" ", 2)[0] for t in legend] == ["start-up", "first batch", "steady", "shutdown"]
        shown = {t.rsplit(" ", 2)[0]: float(t.rsplit(" ", 2)[1]) for t in legend}
        assert shown == pytest.approx({k: round(v, 1) for k, v in record["finished"]["phases"].items()}, abs=0.051)
        summary_rate = f"{second.steady_images_per_s:.1f} images/s"
        assert record["finished"]["steady_images_per_s"] == pytest.approx(second.steady_images_per_s, abs=1e-3)
        if second.steady_images_per_s:
            assert summary_rate in page.inner_text("#run-summary")
        x_ticks = page.locator("#throughput text.x-tick").all_text_contents()
        y_ticks = [float(t) for t in page.locator("#throughput text.y-tick").all_text_contents()]
        assert len(x_ticks) >= 2 and all(t.endswith(" s") for t in x_ticks) and x_ticks[0] == "0 s"
        assert y_ticks == sorted(y_ticks) and y_ticks[0] == 0 and y_ticks[-1] >= 12
        assert page.locator("#throughput path.run").count() == 2
        assert page.locator("#runs-legend li").all_inner_texts()[1].endswith(": 6 rows saved")
        for run, rows in ((1, 12), (2, 6)):
            dots = page.locator(f"#throughput circle[data-run='{run}']")
            assert int(dots.last.get_attribute("data-rows") or -1) == rows
            # Each run against its own launch: none of its points lies before it, or at 0 s for all.
            seconds = [float(dots.nth(i).get_attribute("data-seconds") or "nan") for i in range(dots.count())]
            assert max(seconds) > 0
        assert page.is_visible("#random-weights") and "random weights" in page.inner_text("#random-weights")
        wrap = page.evaluate("getComputedStyle(document.querySelector('.cell .p')).wordBreak")
        assert wrap == "normal"
        browser.close()
    assert any("random weights and mean nothing" in line for line in summary_lines(second))
