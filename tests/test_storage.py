"""Cloud and other inputs: s3:// through a real S3-protocol server, manifests, tar shards, memory://."""

from __future__ import annotations

import io
import json
import sys
import tarfile

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.errors import UsageError
from resnet_batch.data.directories import list_directory
from resnet_batch.data.input_plan import GLOB, WALK, ReadUnit, plan_inputs
from resnet_batch.run.job import run_label

from .conftest import S3_SECRET, write_reference_set
from .test_stores import race_for


def config(inputs, out, **kw) -> LabelConfig:
    base = dict(model="resnet18", weights="none", precision="fp32", batch_size=4, top_k=3)
    return LabelConfig.of(inputs=tuple(str(i) for i in inputs), output=str(out), **{**base, **kw})


def by_name(table: pa.Table) -> dict[str, dict]:
    return {r["path"].rsplit("/", 1)[-1]: r for r in table.to_pylist()}


# Where a test is about which files are read, not what the network makes of them: the null
# model, and each row's error and size checked (the reference set's sizes are all different).
NULL = dict(model="none")


def assert_same_files(rows: dict, reference: dict) -> None:
    assert set(rows) == set(reference)
    for name, ref in reference.items():
        row = rows[name]
        assert row["error"] == ref["error"], name
        assert (row["width"], row["height"]) == (ref["width"], ref["height"]), name


def assert_same_rows(rows: dict, reference: dict) -> None:
    assert_same_files(rows, reference)
    for name, ref in reference.items():
        row = rows[name]
        # Batches group differently between runs, so values agree to float tolerance; top-k
        # ids of a random-init model's near-uniform scores may swap, their probs may not.
        np.testing.assert_allclose(row["embedding"], ref["embedding"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(row["topk_probs"], ref["topk_probs"], rtol=1e-4)


@pytest.fixture(scope="module")
def local_run(ray_local, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    images = write_reference_set(folder)
    out = tmp_path_factory.mktemp("local") / "out"
    assert run_label(config([folder], out)).complete
    return images, by_name(pq.read_table(out))


@pytest.fixture(scope="module")
def s3(s3_endpoint):
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return fs


def test_s3_in_and_out_match_local(s3, local_run, tmp_path):
    images, reference = local_run
    s3.mkdir("rb-in")
    for p in images:
        s3.put(str(p), f"rb-in/photos/{'nested/' if p.suffix == '.png' else ''}{p.name}")
    s3.mkdir("rb-out")
    assert plan_inputs(["s3://rb-in/photos/"]).units == (ReadUnit(WALK, "s3://rb-in/photos"),)  # walked by tasks
    summary = run_label(config(["s3://rb-in/photos"], "s3://rb-out/labels", rows_per_file=4))
    assert summary.complete and summary.inputs == len(images)
    s3.invalidate_cache()
    parts = sorted(s3.glob("rb-out/labels/part-*.parquet"))
    assert len(parts) >= 3
    table = pa.concat_tables(pq.read_table(io.BytesIO(s3.cat_file(p))) for p in parts)
    assert all(p.startswith("s3://rb-in/photos/") for p in table.column("path").to_pylist())
    assert_same_rows(by_name(table), reference)

    # Credentials appear nowhere in what the job wrote.
    for name in s3.find("rb-out/labels"):
        assert S3_SECRET.encode() not in s3.cat_file(name)

    # Resume against the bucket: nothing left to do.
    again = run_label(config(["s3://rb-in/photos"], "s3://rb-out/labels", mode="resume"))
    assert again.complete and again.processed == 0 and again.already_done == len(images)


@pytest.mark.parametrize("kind", ["txt", "csv", "parquet"])
def test_manifests_carry_columns_and_report_missing(s3, local_run, tmp_path, kind):
    images, reference = local_run
    bucket = f"rb-manifest-{kind}"
    s3.mkdir(bucket)
    uris = []
    for p in images:
        s3.put(str(p), f"{bucket}/img/{p.name}")
        uris.append(f"s3://{bucket}/img/{p.name}")
    uris.append(f"s3://{bucket}/img/missing.jpg")
    ids = list(range(100, 100 + len(uris)))
    captions = [f"caption {i}" for i in ids]
    meta = pa.table({"uri": uris, "id": ids, "caption": captions})
    if kind == "txt":
        data, column = ("\n".join(uris) + "\n").encode(), "path"
    elif kind == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(meta, buf)
        data, column = buf.getvalue(), "uri"
    else:
        buf = io.BytesIO()
        pq.write_table(meta, buf)
        data, column = buf.getvalue(), "uri"
    s3.pipe(f"{bucket}/list.{kind}", data)

    out = tmp_path / "out"
    summary = run_label(config([f"s3://{bucket}/list.{kind}"], out, path_column=column, **NULL))
    assert summary.complete and summary.inputs == len(uris) and dict(summary.errors) == {"not_found": 1}
    table = pq.read_table(out)
    rows = by_name(table)
    assert rows["missing.jpg"]["error"].startswith("not_found:")
    del rows["missing.jpg"]
    assert_same_files(rows, reference)
    if kind != "txt":
        assert table.column_names[-2:] == ["id", "caption"]
        got = {r["path"]: (r["id"], r["caption"]) for r in table.to_pylist()}
        assert got == {u: (i, c) for u, i, c in zip(uris, ids, captions, strict=False)}


def test_tar_shards(local_run, tmp_path):
    images, reference = local_run
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for p in images:
            tar.add(p, arcname=f"sample/{p.name}")
        info = tarfile.TarInfo("sample/readme.json")
        payload = json.dumps({"not": "an image"}).encode()
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    out = tmp_path / "out"
    summary = run_label(config([shard], out, **NULL))
    assert summary.complete and summary.inputs == len(images)
    table = pq.read_table(out)
    assert sorted(table.column("path").to_pylist()) == sorted(f"{shard}/sample/{p.name}" for p in images)
    assert_same_files(by_name(table), reference)


def test_memory_filesystem(local_run):
    images, reference = local_run
    mem = fsspec.filesystem("memory")
    for p in images:
        mem.pipe(f"/rb/in/{p.name}", p.read_bytes())
    summary = run_label(config(["memory://rb/in"], "memory://rb/out", **NULL))
    assert summary.complete and summary.inputs == len(images)
    parts = mem.glob("/rb/out/part-*.parquet")
    table = pa.concat_tables(pq.read_table(io.BytesIO(mem.cat_file(p))) for p in parts)
    assert all(p.startswith("memory://") for p in table.column("path").to_pylist())
    assert_same_files(by_name(table), reference)


@pytest.mark.parametrize(
    "inputs, output, needle",
    [
        (["s3://no-such-bucket-rb/images"], "out", "cannot list input s3://no-such-bucket-rb/images"),
        (["ftp2://host/x"], "out", "unsupported URI scheme 'ftp2'"),
        (["IMAGES"], "https://example.com/out", "https:// is read-only"),
    ],
)
def test_storage_errors_are_one_line(s3, tmp_path, inputs, output, needle):
    (tmp_path / "IMAGES").mkdir()
    inputs = [str(tmp_path / i) if i == "IMAGES" else i for i in inputs]
    output = output if "://" in output else str(tmp_path / output)
    with pytest.raises(UsageError) as info:
        run_label(config(inputs, output))
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert S3_SECRET not in str(info.value)


@pytest.mark.parametrize(
    "uri, package, needle",
    [
        ("gs://bucket/images", "gcsfs", "gs:// needs the gcsfs package: pip install 'resnet-batch[gcs]'"),
        ("az://container/images", "adlfs", "az:// needs the adlfs package: pip install 'resnet-batch[azure]'"),
    ],
)
def test_a_missing_extra_is_named(monkeypatch, tmp_path, uri, package, needle):
    """On a machine without the store's package (hidden here: the suite installs them all)."""
    monkeypatch.setitem(sys.modules, package, None)  # what `import` finds where it is not installed
    with pytest.raises(UsageError) as info:
        run_label(config([uri], tmp_path / "out"))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_unwritable_output_bucket(s3, local_run):
    images, _ = local_run
    with pytest.raises(UsageError, match="cannot write to --output s3://no-such-out-bucket"):
        run_label(config([images[0]], "s3://no-such-out-bucket/out"))


def test_one_writer_on_an_object_store(s3):
    """The lease is a conditional create on S3 too (If-None-Match), released at the end."""
    from resnet_batch.output.writer import OutputDir

    s3.mkdir("rb-leased")
    with OutputDir("s3://rb-leased/out").lease():
        assert s3.exists("rb-leased/out/_resnet_batch.lock")
        with pytest.raises(UsageError, match=r"s3://rb-leased/out is being written by another job \(pid"):
            with OutputDir("s3://rb-leased/out").lease():
                pass
    s3.invalidate_cache()
    assert not s3.exists("rb-leased/out/_resnet_batch.lock")
    with OutputDir("s3://rb-leased/out").lease():  # free again
        pass


def test_a_bucket_prefix_is_listed_a_page_at_a_time(s3):
    # A prefix of 10M objects must never be one listing in a worker: ListObjectsV2 pages.
    s3.mkdir("rb-paged")
    names = [f"img{i:03d}.jpg" for i in range(23)] + ["notes.txt", ".hidden.jpg", "sub/deeper.jpg", "sub2/x.jpg"]
    for name in names:
        s3.pipe(f"rb-paged/flat/{name}", b"x")
    pages = list(list_directory("s3://rb-paged/flat", page=5))
    assert len(pages) == 6 and all(p.table.num_rows + len(p.subdirs) + p.hidden <= 5 for p in pages)
    assert sorted(p for lv in pages for p in lv.table.column("path").to_pylist()) == [
        f"s3://rb-paged/flat/img{i:03d}.jpg" for i in range(23)
    ]
    assert sorted(d for lv in pages for d in lv.subdirs) == ["s3://rb-paged/flat/sub", "s3://rb-paged/flat/sub2"]
    assert sum(lv.hidden for lv in pages) == 1
    # What a walk yields for the prefix is what a whole listing of it finds.
    whole = list(list_directory("s3://rb-paged/flat"))
    assert len(whole) == 1 and sorted(whole[0].table.column("path").to_pylist()) == sorted(
        p for lv in pages for p in lv.table.column("path").to_pylist()
    )


def test_a_glob_is_expanded_by_its_read_task(s3, local_run, tmp_path):
    # A glob matching 10M files must not put 10M paths in the driver: its read task expands it.
    images, reference = local_run
    pattern = f"{images[0].parent}/*.*"
    assert plan_inputs([pattern]).units == (ReadUnit(GLOB, pattern),)
    summary = run_label(config([pattern], tmp_path / "out", **NULL))
    assert summary.complete and summary.inputs == len(images)
    assert_same_files(by_name(pq.read_table(tmp_path / "out")), reference)
    # A local glob that matches nothing is a bad argument, refused before any work...
    with pytest.raises(UsageError, match="matches no files"):
        plan_inputs([f"{images[0].parent}/*.webp"])
    # ...a remote one is listed in its task, so it becomes a row that says so.
    s3.mkdir("rb-glob")
    s3.pipe("rb-glob/in/notes.txt", b"not an image")
    summary = run_label(config(["s3://rb-glob/in/*.jpg"], tmp_path / "remote", **NULL))
    rows = pq.read_table(tmp_path / "remote").to_pylist()
    assert summary.complete and [r["path"] for r in rows] == ["s3://rb-glob/in/*.jpg"]
    assert rows[0]["error"].startswith("list_failed:") and "matches no files" in rows[0]["error"]


def test_a_stale_lease_is_taken_over_by_one_job_only(tmp_path):
    """Jobs that find the same stale lease race to take it over: one wins, every time (on
    each bucket store: test_stores)."""
    uri = str(tmp_path / "out")
    for trial in range(6):
        won, refused = race_for(uri, racers=8, stale=f"stale{trial}")
        assert won == 1 and len(refused) == 7, (trial, won, refused)


def test_a_lease_being_written_is_never_read_as_stale(tmp_path, monkeypatch):
    """Created or renewed, a lease file is whole whenever another job reads it: one read
    empty or half-written would count as stale and be taken over from its live holder."""
    from resnet_batch.output import lease_record, ownership
    from resnet_batch.output.writer import OutputDir

    monkeypatch.setattr(ownership, "RENEW_EVERY_S", 0.0005)  # the holder rewrites its lease nonstop
    uri = str(tmp_path / "out")
    held = OutputDir(uri).lease().__enter__()
    try:
        reads = [lease_record.lease_state(held.fs, held.path) for _ in range(3000)]
        rivals = []
        for _ in range(200):
            try:
                OutputDir(uri).lease().__enter__()
                rivals.append("took it")
            except UsageError as exc:
                rivals.append(str(exc).split(" by ")[0])
    finally:
        held.__exit__(None, None, None)
    assert {str(state).split(":")[0] for state in reads} == {"held"}, sorted({str(s) for s in reads})
    assert "took it" not in rivals, rivals.count("took it")


@pytest.mark.parametrize("spelling", ["{}", "file://{}", "local://{}"])
def test_a_fifo_named_as_a_file_is_refused_however_it_is_spelled(tmp_path, spelling):
    """--labels, --weights and --config are read through one local check: a FIFO is refused
    at once (a plain read would block forever), whether named as a path or a file:// URI."""
    import os

    from resnet_batch.config.config_file import load_config_file
    from resnet_batch.core.storage import NotRegularFile, read_bytes_or_raise
    from resnet_batch.model.checkpoints import read_labels

    fifo = tmp_path / "names.txt"
    os.mkfifo(fifo)
    uri = spelling.format(fifo)
    with pytest.raises(NotRegularFile):
        read_bytes_or_raise(uri)
    with pytest.raises(UsageError, match=r"^cannot read --labels file .*a FIFO"):
        read_labels(uri)
    with pytest.raises(UsageError, match=r"^cannot read config file .*a FIFO"):
        load_config_file(uri)
