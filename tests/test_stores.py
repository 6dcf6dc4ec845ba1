"""Each bucket store the README names, against a real server of its protocol on 127.0.0.1:
moto (s3://), fake-gcs-server (gs://), Azurite (az://). Per store: every kind of input
exactly once, values equal to the reference with the checkpoint, labels and config on that
same server; the output's parts and run record, resumed after a SIGKILL; and the lease's
conditional create raced. tests/stores.py starts the servers."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torchvision.models as tvm

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.errors import UsageError
from resnet_batch.core.storage import filesystem
from resnet_batch.model.null import BATCH_SECONDS_VARIABLE
from resnet_batch.output.ownership import LEASE_FILE
from resnet_batch.output.writer import OutputDir
from resnet_batch.run.job import run_label

from .conftest import write_jpegs
from .helpers import RESNET_BATCH, in_process, kill_session, piped
from .stores import INSTALL, ROOT, start_azure, start_gcs
from .test_label_reference import check_against_reference, reference_outputs

STORES = ["s3", "gs", "az"]
SERVERS = {"s3": "moto_server", "gs": "gcs_server", "az": "azure_server"}
PROTOCOLS = {"s3": "s3", "gs": "gcs", "az": "az"}


@dataclass
class Store:
    scheme: str
    fs: fsspec.AbstractFileSystem
    server: Any = None  # its server: down() and up() make an outage

    def bucket(self, name: str) -> str:
        """A bucket (container) of this store, made if new, as a URI."""
        name = f"rb-{self.scheme}-{name}"
        if not self.fs.exists(name):
            self.fs.mkdir(name)
        return f"{self.scheme}://{name}"

    def key(self, uri: str) -> str:
        return uri.split("://", 1)[1]

    def put(self, data: bytes, uri: str) -> str:
        self.fs.pipe_file(self.key(uri), data)
        return uri

    def table(self, output: str) -> pa.Table:
        self.fs.invalidate_cache()
        parts = sorted(self.fs.glob(f"{self.key(output)}/part-*.parquet"))
        assert parts, f"no part files in {output}"
        return pa.concat_tables(pq.read_table(io.BytesIO(self.fs.cat_file(p))) for p in parts)


@pytest.fixture(scope="module", params=STORES)
def store(request, ray_local) -> Store:
    scheme = request.param
    server = request.getfixturevalue(SERVERS[scheme])
    if server is None:
        pytest.skip(f"no {scheme}:// server installed here: {INSTALL[scheme]}")
    fs = fsspec.filesystem(PROTOCOLS[scheme])
    fs.invalidate_cache()
    return Store(scheme, fs, server)


@pytest.fixture(scope="module")
def on_the_store(store, reference_images, resnet18_ckpt):
    """The reference set, a checkpoint, labels and a config, all on the store."""
    root = store.bucket("data")
    uris = {}
    for image in reference_images:  # PNGs one folder down: a walk goes into folders
        uri = f"{root}/photos/{'nested/' if image.suffix == '.png' else ''}{image.name}"
        uris[str(image)] = store.put(image.read_bytes(), uri)
    weights = store.put(resnet18_ckpt.read_bytes(), f"{root}/models/resnet18.pth")
    labels = store.put("".join(f"class-{i}\n" for i in range(1000)).encode(), f"{root}/models/classes.txt")
    config = f"model: resnet18\nweights: {weights}\nlabels: {labels}\nprecision: fp32\ntop_k: 3\nbatch_size: 4\n"
    return root, uris, store.put(config.encode(), f"{root}/jobs/reference.yaml")


@pytest.fixture(scope="module")
def labeled(store, on_the_store) -> str:
    """The reference set labeled from the store into the store, by the config on the store."""
    root, _, config = on_the_store
    output = f"{store.bucket('reference')}/out"
    done = in_process("label", f"{root}/photos", "--config", config, "--output", output, "--rows-per-file", "5")
    assert done.returncode == 0, done.stderr[-3000:]
    return output


def test_values_equal_the_reference_with_weights_labels_and_config_on_the_store(
    store, on_the_store, labeled, reference_images, resnet18_ckpt
):
    _, uris, _ = on_the_store
    table = store.table(labeled)
    categories = tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    for row in table.to_pylist():  # the store's class names, in the checkpoint's order
        assert row["topk_labels"] == [f"class-{i}" for i in row["topk_ids"]], row["path"]
    names = [[categories[i] for i in ids] for ids in table.column("topk_ids").to_pylist()]
    table = table.set_column(table.schema.get_field_index("topk_labels"), "topk_labels", pa.array(names))
    embeddings, logits = reference_outputs("resnet18", resnet18_ckpt, "IMAGENET1K_V1", reference_images)
    check_against_reference(
        table,
        {uris[path]: value for path, value in embeddings.items()},
        {uris[path]: value for path, value in logits.items()},
        top_k=3,
    )
    record = store.fs.cat_file(f"{store.key(labeled)}/_resnet_batch.json")
    assert b'"finished"' in record


def test_the_review_tools_and_eval_on_the_store(store, on_the_store, labeled, tmp_path):
    root, uris, _ = on_the_store
    count = len(uris)
    report = in_process("report", labeled, "--html", str(tmp_path / "report.html"))
    assert report.returncode == 0 and (tmp_path / "report.html").stat().st_size > 0, report.stderr[-2000:]
    export = in_process("export", labeled, "--format", "csv", "--output", str(tmp_path / "labels.csv"))
    assert export.returncode == 0, export.stderr[-2000:]
    assert len((tmp_path / "labels.csv").read_text().splitlines()) == count + 1  # a header, a row each
    near = in_process("neighbors", labeled, "--k", "3", "--output", str(tmp_path / "nn"))
    assert near.returncode == 0 and any((tmp_path / "nn").glob("*.parquet")), near.stderr[-2000:]

    # eval: a class folder of ImageNet's layout on the store, predictions into the store
    for uri in sorted(uris.values())[:4]:
        store.put(store.fs.cat_file(store.key(uri)), f"{root}/val/n01440764/{uri.rsplit('/', 1)[1]}")
    weights = f"{root}/models/resnet18.pth"
    scored = in_process(
        "eval", f"{root}/val", "--model", "resnet18", "--weights", weights, "--precision", "fp32",
        "--output", f"{root}/eval-out",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "top-1" in scored.stdout, scored.stdout
    assert store.table(f"{root}/eval-out").num_rows == 4


def _null_run(inputs: list[str], output: str):
    cfg = LabelConfig.of(inputs=tuple(inputs), output=output, model="none", batch_size=4)
    summary = run_label(cfg)
    assert summary.complete, summary
    return summary


def test_every_kind_of_input_exactly_once(store, on_the_store):
    root, uris, _ = on_the_store
    out = store.bucket("inputs")
    jpegs = sorted(u for u in uris.values() if u.endswith((".jpg", ".jpeg")) and "/nested/" not in u)

    _null_run([f"{root}/photos/*.jp*g"], f"{out}/glob")
    assert sorted(store.table(f"{out}/glob").column("path").to_pylist()) == jpegs

    meta = pa.table({"path": list(uris.values()), "id": list(range(len(uris)))})
    csv, parquet = io.BytesIO(), io.BytesIO()
    pacsv.write_csv(meta, csv)
    pq.write_table(meta, parquet)
    manifests = {
        "txt": "".join(f"{u}\n" for u in uris.values()).encode(),
        "csv": csv.getvalue(),
        "parquet": parquet.getvalue(),
    }
    for kind, data in manifests.items():
        manifest = store.put(data, f"{root}/manifests/inputs.{kind}")
        _null_run([manifest], f"{out}/{kind}")
        rows = store.table(f"{out}/{kind}")
        assert sorted(rows.column("path").to_pylist()) == sorted(uris.values()), kind
        assert all(error is None for error in rows.column("error").to_pylist()), kind
        if kind != "txt":  # a manifest's own columns ride along
            assert sorted(rows.column("id").to_pylist()) == list(range(len(uris))), kind

    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w") as tar:
        for n, uri in enumerate(jpegs):
            data = store.fs.cat_file(store.key(uri))
            info = tarfile.TarInfo(f"{n:04d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shard_uri = store.put(shard.getvalue(), f"{root}/shards/shard-000.tar")
    _null_run([shard_uri], f"{out}/tar")
    rows = store.table(f"{out}/tar")
    assert sorted(rows.column("path").to_pylist()) == [f"{shard_uri}/{n:04d}.jpg" for n in range(len(jpegs))]
    assert all(error is None for error in rows.column("error").to_pylist())


def _label_command(inputs: str, output: str, mode: str) -> list[str]:
    return [*RESNET_BATCH, "label", inputs, "--output", output, "--model", "none", "--num-workers", "1"] + [
        "--batch-size", "2", "--rows-per-file", "2", "--mode", mode,
    ]  # fmt: skip


def _until_two_parts(store: Store, output: str, job: subprocess.Popen) -> None:
    """Returns once two part files of the running job are on the store (the job mid-run)."""
    deadline = time.monotonic() + 240
    while len(store.fs.glob(f"{store.key(output)}/part-*.parquet")) < 2:
        assert job.poll() is None, piped(job.stdout).read()[-3000:]
        assert time.monotonic() < deadline, "no part file appeared"
        store.fs.invalidate_cache()
        time.sleep(0.2)


def test_a_job_killed_mid_run_resumes_to_exactly_once(store, on_the_store):
    """SIGKILL of the driver and its Ray: the parts already on the store stay, the lease a
    dead process holds is taken over, and the resume adds exactly the rest."""
    root, uris, _ = on_the_store
    output = f"{store.bucket('killed')}/out"
    slow = {**os.environ, BATCH_SECONDS_VARIABLE: "0.3"}
    job = subprocess.Popen(
        _label_command(f"{root}/photos", output, "error"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=slow,
    )  # fmt: skip
    try:
        _until_two_parts(store, output, job)
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        kill_session(job.pid)
        piped(job.stdout).close()
    saved = store.table(output).num_rows
    assert 0 < saved < len(uris), "the kill must land mid-job"

    resumed = subprocess.run(
        _label_command(f"{root}/photos", output, "resume"), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"already done {saved}, processed {len(uris) - saved}, rows in output {len(uris)}" in resumed.stdout
    assert sorted(store.table(output).column("path").to_pylist()) == sorted(uris.values())


def race_for(uri: str, racers: int = 2, stale: str | None = None) -> tuple[int, list[str]]:
    """Jobs claiming the output at the same moment: how many held it, and the others'
    refusals. With `stale`, they find a stale lease of that token there (renewed at 0)."""
    if stale:
        fs, path = filesystem(uri)
        fs.makedirs(path, exist_ok=True)
        record = {"token": stale, "host": "gone", "pid": 1, "renewed": 0}
        fs.pipe_file(f"{path}/{LEASE_FILE}", json.dumps(record).encode())
    start, attempted = threading.Barrier(racers), threading.Barrier(racers)
    won, refused = [], []

    def claim():
        lease = OutputDir(uri).lease()
        start.wait()
        try:
            lease.__enter__()
        except UsageError as exc:
            refused.append(str(exc))
            attempted.wait()
            return
        won.append(lease)
        attempted.wait()  # held until every rival has tried
        lease.__exit__(None, None, None)

    threads = [threading.Thread(target=claim) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return len(won), refused


def test_one_job_holds_an_output_and_racing_jobs_one_runs(store):
    """The lease's conditional create on each store: a job that claims an output another
    holds is refused (gcsfs's "xb" open replaced the holder's lease: both ran); of two jobs
    that claim one new output at the same moment, exactly one holds it, twenty times."""
    root = store.bucket("race")
    with OutputDir(f"{root}/held").lease():
        with pytest.raises(UsageError, match="is being written by another job"):
            OutputDir(f"{root}/held").lease().__enter__()
    for trial in range(20):
        won, refused = race_for(f"{root}/out-{trial}")
        assert won == 1 and len(refused) == 1, (trial, won, refused)
        assert "is being written by another job" in refused[0] or "at the same moment" in refused[0], refused[0]


def test_a_stale_lease_is_taken_over_by_one_job_only(store):
    """Jobs that find the same stale lease race to take it over (a conditional create of the
    takeover marker): one wins, every time."""
    root = store.bucket("takeover")
    for trial in range(6):
        won, refused = race_for(f"{root}/out", racers=8, stale=f"stale{trial}")
        assert won == 1 and len(refused) == 7, (trial, won, refused)


@pytest.mark.parametrize("scheme", ["gs", "az"])
def test_a_store_server_stops_leaving_no_process_or_port(scheme):
    server = (start_gcs if scheme == "gs" else start_azure)()
    if server is None:
        pytest.skip(f"no {scheme}:// server installed here: {INSTALL[scheme]}")
    folder, process = server.folder.name, server.process
    server.stop()
    assert process is not None and process.poll() is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", server.port))  # free again
    assert not os.path.exists(folder)


def readme_example(name: str) -> str:
    """The README's Python block marked `<!-- example: NAME -->`."""
    text = (ROOT / "README.md").read_text()
    return text.split(f"<!-- example: {name} -->\n```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_duckdb_and_polars_read_an_output(ray_local, s3_endpoint, reference_images, tmp_path, monkeypatch):
    """The README's two blocks, run as written: on disk, and on S3."""
    folder = str(reference_images[0].parent)
    local = tmp_path / "labels"
    _null_run([folder], str(local))
    s3 = Store("s3", fsspec.filesystem("s3"))
    remote = f"{s3.bucket('readers')}/labels"
    _null_run([folder], remote)

    seen: dict = {}
    exec(readme_example("read-locally").replace("/tmp/rb-out", str(local)), seen)
    assert seen["labels"].height == len(reference_images)
    assert sorted(seen["labels"]["path"].to_list()) == sorted(str(p) for p in reference_images)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")  # Polars: the test's S3 server speaks plain HTTP
    exec(readme_example("read-from-s3").replace("s3://bucket/labels", remote), seen)
    assert seen["rows"].item() == len(reference_images)


def test_a_missing_bucket_a_deleted_object_and_wrong_credentials(store, on_the_store, tmp_path):
    """Each one line naming the URI and the cause (exit 2), or one row saying so."""
    root, uris, _ = on_the_store
    refused = in_process("label", f"{store.scheme}://rb-no-such-bucket/photos", "--output", str(tmp_path / "a"))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-2000:]
    assert f"{store.scheme}://rb-no-such-bucket/photos" in lines[0], lines[0]
    refused = in_process("label", str(tmp_path), "--output", f"{store.scheme}://rb-no-such-bucket/out")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-2000:]
    assert f"cannot write to --output {store.scheme}://rb-no-such-bucket/out" in lines[0], lines[0]

    # An object deleted after it was listed (here: named by a manifest, then deleted)
    kept = sorted(uris.values())[0]
    gone = store.put(store.fs.cat_file(store.key(kept)), f"{root}/doomed/gone.jpg")
    manifest = store.put(f"{kept}\n{gone}\n".encode(), f"{root}/manifests/doomed.txt")
    store.fs.rm(store.key(gone))
    _null_run([manifest], f"{root}/doomed-out")
    rows = {r["path"]: r["error"] for r in store.table(f"{root}/doomed-out").to_pylist()}
    assert rows[kept] is None and rows[gone].startswith("not_found:"), rows

    if store.scheme != "az":  # moto and fake-gcs-server accept any credentials: Azurite checks them
        return
    wrong = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": os.environ["AZURE_STORAGE_CONNECTION_STRING"].replace(
        "AccountKey=Eby8", "AccountKey=Xby8")}  # fmt: skip
    refused = subprocess.run(
        [*RESNET_BATCH, "label", f"{root}/photos", "--output", str(tmp_path / "b"), "--model", "none"],
        capture_output=True, text=True, timeout=300, env=wrong,
    )  # fmt: skip
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and f"{root}/photos" in lines[-1], refused.stderr[-2000:]
    assert "authoriz" in lines[-1].lower() or "403" in lines[-1], lines[-1]


def test_the_store_stopped_mid_job_then_resumed(store, tmp_path):
    """The store's server down while a job writes to it: past the retry budget the job stops,
    saying what this run saved and how to resume; with the server back, the resume finishes
    it: every input exactly once, no saved row lost."""
    images = write_jpegs(tmp_path / "in", 40, seed=7)
    output = f"{store.bucket('outage')}/out"
    env = {**os.environ, BATCH_SECONDS_VARIABLE: "0.3", "RESNET_BATCH_STORAGE_RETRY_S": "3"}
    job = subprocess.Popen(
        _label_command(str(tmp_path / "in"), output, "error"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env,
    )  # fmt: skip
    try:
        _until_two_parts(store, output, job)
        store.server.down()
        try:
            said = job.communicate(timeout=400)[0]
        finally:
            store.server.up()
    finally:
        kill_session(job.pid)
    assert job.returncode not in (0, None), said[-3000:]
    assert "the store stopped answering" in said and "--mode resume" in said, said[-3000:]
    saved = store.table(output).num_rows
    assert 0 < saved < len(images)

    again = _label_command(str(tmp_path / "in"), output, "resume")
    resumed = subprocess.run(again, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert sorted(store.table(output).column("path").to_pylist()) == sorted(str(p) for p in images)


def test_the_store_down_while_the_job_reads_it(store, tmp_path):
    """Inputs on the store (named by a local manifest), its server down: past the retry
    budget the job stops, saying so, instead of saving a `read_error` row for each input
    (which no resume would read again); with the server back, the resume reads them all."""
    root = store.bucket("readout")
    images = write_jpegs(tmp_path / "in", 24, seed=8)
    uris = [store.put(image.read_bytes(), f"{root}/in/{image.name}") for image in images]
    manifest = tmp_path / "inputs.txt"
    manifest.write_text("".join(f"{u}\n" for u in uris))
    output = tmp_path / "out"
    env = {**os.environ, "RESNET_BATCH_STORAGE_RETRY_S": "3"}
    store.server.down()
    try:
        stopped = subprocess.run(
            _label_command(str(manifest), str(output), "error"), capture_output=True, text=True, timeout=400, env=env
        )
    finally:
        store.server.up()
    said = stopped.stdout + stopped.stderr
    assert stopped.returncode not in (0, None), said[-3000:]
    assert "the store stopped answering" in said and "--mode resume" in said, said[-3000:]
    saved = pq.read_table(output).column("error").to_pylist() if list(output.glob("part-*.parquet")) else []
    assert not any(saved), saved  # no row says "read_error" for an input that was never read

    resumed = subprocess.run(
        _label_command(str(manifest), str(output), "resume"), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    rows = pq.read_table(output)
    assert sorted(rows.column("path").to_pylist()) == sorted(uris)
    assert not any(rows.column("error").to_pylist())
