"""Directories are walked by Ray tasks, not listed in the driver; the output check re-walks them."""

from __future__ import annotations

import shutil
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.pathset import isin_sorted, path_hashes
from resnet_batch.data.directories import list_directory
from resnet_batch.data.input_plan import WALK, plan_inputs
from resnet_batch.output.writer import OutputDir
from resnet_batch.run.bookkeeping import Books, check_output, count_here
from resnet_batch.run.job import run_label
from resnet_batch.run.listing import list_here, walk, walk_here

from .conftest import write_jpegs


def config(inputs, out, **kw) -> LabelConfig:
    # the null model: these tests are about which rows exist, not what they hold
    base = dict(model="none", precision="fp32", batch_size=4, top_k=2)
    return LabelConfig.of(inputs=tuple(str(i) for i in inputs), output=str(out), **{**base, **kw})


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A nested collection: images at several depths, a tar shard, hidden and non-image files."""
    root = tmp_path_factory.mktemp("tree") / "collection"
    expected = []
    for i, sub in enumerate(["", "a", "a/b", "a/b/c", "d", "e/f/g/h"]):
        expected += [str(p) for p in write_jpegs(root / sub, 2, seed=i, height=48, width=64)]
    write_jpegs(root / ".cache", 2, seed=9)  # hidden: not an input
    write_jpegs(root / "a" / ".hidden", 1, seed=10)
    (root / "d" / "notes.txt").write_text("not an image")
    members = write_jpegs(root / "staging", 3, seed=11, height=48, width=64)
    with tarfile.open(root / "d" / "shard-0.tar", "w") as tar:
        for m in members:
            tar.add(m, arcname=f"key{m.stem}.jpg")
    expected += [f"{root}/d/shard-0.tar/key{m.stem}.jpg" for m in members]
    expected += [str(m) for m in members]
    (root / "e" / "broken.tar").write_bytes(b"not a tar archive" * 100)  # one list_failed row
    expected.append(f"{root}/e/broken.tar")
    return root, sorted(expected)


def test_directories_are_left_to_ray_tasks(tree):
    root, _ = tree
    plan = plan_inputs([str(root), str(root / "a" / "b"), str(root) + "/"])
    assert [u.kind for u in plan.units] == [WALK]  # the driver listed nothing
    assert plan.directories == (str(root),)  # a/b is inside root: walked once


def test_walk_finds_what_a_full_listing_finds(ray_local, tree):
    root, expected = tree
    tables = [level.table for level in walk(str(root)) if level.table.num_rows]
    assert len(tables) > 1  # one table per directory, yielded as each is listed
    walked = sorted(p for t in tables for p in t.column("path").to_pylist())
    assert walked == expected
    # What eval lists in the driver (the same read units, listed here) is the same.
    assert walked == sorted(list_here(plan_inputs([str(root)])).column("path").to_pylist())
    # The driver's own walk (local output checks) yields the same tables in the same order.
    assert [lv.table.to_pylist() for lv in walk_here(str(root)) if lv.table.num_rows] == [t.to_pylist() for t in tables]


def test_walked_tree_gets_one_row_per_image(ray_local, tree, tmp_path):
    root, expected = tree
    files = [p for p in expected if ".tar" not in p]
    manifest = tmp_path / "extra.txt"  # lists an image that the walk also finds
    manifest.write_text(files[3] + "\n")
    out = tmp_path / "out"
    summary = run_label(config([root, manifest, files[5]], out))
    assert summary.complete and summary.inputs == len(expected) and summary.duplicates == 0
    rows = {r["path"]: r["error"] for r in pq.read_table(out, columns=["path", "error"]).to_pylist()}
    assert sorted(rows) == expected
    assert rows.pop(f"{root}/e/broken.tar").startswith(f"list_failed: cannot read tar shard {root}/e/broken.tar")
    assert set(rows.values()) == {None}
    assert summary.errors == {"list_failed": 1}


def test_output_check_counts_missing_and_duplicate_rows(ray_local, tree, tmp_path):
    root, expected = tree
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    out = tmp_path / "out"
    assert run_label(config([copy], out, rows_per_file=4)).complete
    output = OutputDir(str(out))
    plan = plan_inputs([str(copy)])

    def check():  # every input listed and claimed, then the whole output read back
        books = Books.in_process()
        assert count_here(plan, books) == len(expected) + 2  # nothing was done before these books
        return check_output(output, books)

    write_jpegs(copy / "a" / "new", 2, seed=20)  # two inputs the output lacks
    counted = check()
    assert (counted.inputs, counted.missing, counted.duplicates) == (len(expected) + 2, 2, 0)

    part = output.part_files()[0]
    shutil.copy(part, out / "part-copy.parquet")  # rows written twice
    counted = check()
    assert counted.duplicates == pq.read_metadata(part).num_rows and counted.missing == 2

    resumed = run_label(config([copy], out, mode="resume"))  # keeps one row per input, sets the copy aside
    assert resumed.processed == 2 and resumed.already_done == len(expected)
    assert resumed.complete and resumed.duplicates == 0 and (out / "_repeats-part-copy.parquet").exists()


def test_path_sets():
    paths = [f"s3://bucket/img/{i}.jpg" for i in range(100)]
    done = np.sort(path_hashes(paths[::3]))
    mask = isin_sorted(path_hashes(paths), done)
    assert mask.tolist() == [i % 3 == 0 for i in range(100)]
    assert len(set(path_hashes(paths).tolist())) == 100


def test_a_flat_folder_is_listed_a_page_at_a_time(tmp_path):
    # A folder of 10M files must never be one listing in a worker: os.scandir in chunks.
    folder = tmp_path / "flat"
    images = write_jpegs(folder, 13, seed=0, height=8, width=8)
    (folder / "sub").mkdir()
    (folder / ".hidden.jpg").write_bytes(b"x")
    pages = list(list_directory(str(folder), page=4))
    assert len(pages) == 4 and all(p.table.num_rows + len(p.subdirs) + p.hidden <= 4 for p in pages)
    assert sorted(p for lv in pages for p in lv.table.column("path").to_pylist()) == sorted(map(str, images))
    assert [d for lv in pages for d in lv.subdirs] == [str(folder / "sub")]
    assert sum(lv.hidden for lv in pages) == 1
    # A retried listing of an unchanged folder pages it the same way (readdir order).
    assert [lv.table.to_pylist() for lv in list_directory(str(folder), page=4)] == [
        lv.table.to_pylist() for lv in pages
    ]
