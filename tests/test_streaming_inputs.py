"""Manifests stream: cut into splits that read tasks read, never listed whole by the
driver; a split's lines are exactly the lines that start in it, and a path listed in
several splits (or manifests) still gets exactly one row."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.data import manifests
from resnet_batch.data.input_plan import SPLIT, plan_inputs
from resnet_batch.data.manifests import open_manifest, read_split
from resnet_batch.run.job import run_label

from .conftest import write_jpegs


def read_whole(manifest) -> list[str]:
    return [p for s in manifest.splits for t in read_split(s) for p in t.column("path").to_pylist()]


@pytest.mark.parametrize("split_bytes", [1, 7, 64, 1 << 20])
def test_text_splits_hold_each_line_once(tmp_path, monkeypatch, split_bytes):
    monkeypatch.setattr(manifests, "TEXT_SPLIT_BYTES", split_bytes)
    names = [f"/data/{'x' * (i % 13)}{i}.jpg" for i in range(300)]
    lines = ["# a comment", ""] + [n + ("\r" if i % 5 == 0 else "") for i, n in enumerate(names)] + ["  ", "rel/a.jpg"]
    text = tmp_path / "list.txt"
    text.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n/data/latin-\xe9.jpg")  # no final newline
    manifest = open_manifest(str(text))
    assert len(manifest.splits) == -(-text.stat().st_size // split_bytes)
    assert manifest.first_entry == names[0]
    expected = names + [f"{tmp_path}/rel/a.jpg", "/data/latin-\\xe9.jpg"]
    assert read_whole(manifest) == expected


def test_parquet_and_csv_manifests_stream_with_their_columns(tmp_path):
    paths = [f"/data/{i}.jpg" for i in range(1000)]
    table = pa.table({"uri": paths, "label": list(range(1000))})
    pq.write_table(table, tmp_path / "list.parquet", row_group_size=128)
    parquet = open_manifest(str(tmp_path / "list.parquet"), "uri")
    assert len(parquet.splits) == 8 and parquet.extras == pa.schema([("label", pa.int64())])
    assert read_whole(parquet) == paths
    assert [v for s in parquet.splits for t in read_split(s) for v in t.column("label").to_pylist()] == list(
        range(1000)
    )
    (tmp_path / "list.csv").write_text(
        "uri,caption\n" + "".join(f'{p},"line one\nline two {i}"\n' for i, p in enumerate(paths))
    )
    csv = open_manifest(str(tmp_path / "list.csv"), "uri")  # quoted newlines: one split, read in batches
    assert len(csv.splits) == 1 and csv.first_entry == paths[0]
    assert read_whole(csv) == paths


def test_a_manifest_split_many_ways_gets_one_row_per_path(ray_local, tmp_path, monkeypatch):
    monkeypatch.setattr(manifests, "TEXT_SPLIT_BYTES", 256)  # the driver cuts; the tasks read
    images = [str(p) for p in write_jpegs(tmp_path / "in", 12, seed=3, height=32, width=40)]
    entries = images + images[::-1] + [str(tmp_path / "in" / "gone.jpg")] + images[:3]
    (tmp_path / "a.txt").write_text("\n".join(entries) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(images[5:]) + "\n")
    plan = plan_inputs([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")])
    assert sum(u.kind == SPLIT for u in plan.units) > 4
    cfg = LabelConfig.of(
        inputs=(str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), str(tmp_path / "in")),
        output=str(tmp_path / "out"),
        model="none",
        batch_size=4,
        rows_per_file=5,
    )
    summary = run_label(cfg)
    rows = pq.read_table(tmp_path / "out", columns=["path", "error"]).to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(images + [str(tmp_path / "in" / "gone.jpg")])
    assert summary.complete and summary.inputs == 13 and summary.errors == {"not_found": 1}

    # Lose two part files: a resume labels exactly their rows, counted against the books.
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    lost = sum(pq.read_metadata(p).num_rows for p in parts[:2])
    for p in parts[:2]:
        p.unlink()
    resumed = run_label(cfg.replace(mode="resume"))
    assert resumed.complete and resumed.processed == lost and resumed.already_done == 13 - lost
    assert pq.read_table(tmp_path / "out").num_rows == 13
