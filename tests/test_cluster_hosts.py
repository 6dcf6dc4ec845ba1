"""A cluster of real hosts on this machine (cluster/netns-cluster.sh): a Ray head, two
workers, an S3 server and a laptop, each with its own network, /tmp and hostname, storage
the only medium they share. What a team meets first on its own cluster, faults included:
each ends with every input exactly once.

Needs root (network and mount namespaces): elsewhere these tests skip, saying so."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .cluster_hosts import SCRIPT, Hosts, Job, saved_in
from .conftest import save_random_checkpoint, write_reference_set
from .helpers import found
from .test_label_reference import check_against_reference, reference_outputs

JOB_SERVER = "http://198.18.0.2:8265"
HEAD = "198.18.0.2:6379"
INPUTS, COUNT = "s3://rbc-data/in", 3000
NULL_JOB = ["--model", "none", "--batch-size", "8", "--checkpoint-every", "1", "--progress-every", "1"]
PARTITION_S, LINK_DOWN_S = 30, 20

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nsenter", "unshare")),
        reason="needs root with ip, nsenter and unshare (network and mount namespaces); CI runs it as root",
    ),
]


@pytest.fixture()
def hosts(cluster):
    """The module's cluster, each worker host a live node at the start of each test."""
    cluster.whole()
    return cluster


@pytest.fixture(scope="module")
def cluster():
    # Not under pytest's own temporary folders, which another pytest run may prune: the
    # hosts' /tmp folders are in it, mounted.
    state = Path(tempfile.mkdtemp(prefix="resnet-batch-hosts-"))
    cluster = Hosts(state)
    try:
        cluster.script("start", "2", "1", timeout=300)
        cluster.tool("put-images", INPUTS, str(COUNT), "5")
        yield cluster
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=cluster.env, capture_output=True, timeout=120)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        mounts = Path("/proc/self/mountinfo").read_text()
        assert "rbt-" not in left and "rbt" not in links and str(state) not in mounts, (left, links)
        shutil.rmtree(state, ignore_errors=True)  # `stop` removes it, unless it failed


def _inputs() -> list[str]:
    return [f"{INPUTS}/img_{i:03d}.jpg" for i in range(COUNT)]


def _submit(hosts: Hosts, output: str, *extra: str, env: dict | None = None) -> Job:
    label = ["label", INPUTS, "--output", output, *NULL_JOB, *extra]
    return hosts.start("laptop", "resnet-batch", "submit", "--address", JOB_SERVER, "--wait", "--", *label, env=env)


def test_a_driver_off_the_cluster_is_refused_naming_the_job_server(hosts):
    """Ray's core worker, finding no node on the laptop, ended `label --address` with exit 1 and no word."""
    for address in (HEAD, "ray://198.18.0.2:10001"):
        job = hosts.run("laptop", "resnet-batch", "label", INPUTS, "--output", "s3://rbc-data/x", "--address", address)
        lines = job.stderr.strip().splitlines()
        assert job.returncode == 2 and len(lines) == 1, job.stderr[-2000:]
        assert f"resnet-batch submit --address {JOB_SERVER} -- label" in lines[0], lines[0]


def test_the_laptops_own_files_are_refused_or_travel_with_the_job(hosts):
    """A laptop folder given to submit was a job of `missing` rows; now it is refused, and a
    labels file on the laptop travels with the job."""
    images = hosts.tmp("laptop") / "photos"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"\xff\xd8")
    refused = hosts.run("laptop", "resnet-batch", "submit", "--address", JOB_SERVER, "--", "label", "/tmp/photos",
                        "--output", "s3://rbc-data/never")  # fmt: skip
    assert refused.returncode == 2 and "input /tmp/photos is on this machine" in refused.stderr, refused.stderr
    (hosts.tmp("laptop") / "names.txt").write_text("".join(f"class {i}\n" for i in range(1000)))
    label = ["label", f"{INPUTS}/img_00*.jpg", "--output", "s3://rbc-data/shipped", "--labels", "/tmp/names.txt"]
    shipped = hosts.run("laptop", "resnet-batch", "submit", "--address", JOB_SERVER, "--wait", "--", *label,
                        "--model", "resnet18", "--weights", "none", "--precision", "fp32")  # fmt: skip
    assert shipped.returncode == 0, shipped.stdout[-3000:] + shipped.stderr[-3000:]
    hosts.tool("get", "s3://rbc-data/shipped", "/tmp/shipped")
    table = pq.read_table(hosts.tmp("laptop") / "shipped")
    assert table.num_rows == 10 and all(t[0].startswith("class ") for t in table.column("topk_labels").to_pylist())


def test_values_equal_the_reference_with_everything_on_the_s3_host(hosts, tmp_path):
    """Inputs, checkpoint and output on the S3 host; the job submitted from the laptop."""
    local = write_reference_set(tmp_path / "ref")
    checkpoint = save_random_checkpoint("resnet18", tmp_path / "r18.pt")
    carried = hosts.tmp("laptop") / "ref"
    shutil.copytree(local[0].parent, carried)
    shutil.copy(checkpoint, hosts.tmp("laptop") / "r18.pt")
    for path in carried.iterdir():
        hosts.tool("put", f"/tmp/ref/{path.name}", f"s3://rbc-data/ref/{path.name}")
    hosts.tool("put", "/tmp/r18.pt", "s3://rbc-data/models/r18.pt")
    label = ["label", "s3://rbc-data/ref", "--output", "s3://rbc-data/ref-out", "--model", "resnet18",
             "--weights", "s3://rbc-data/models/r18.pt", "--precision", "fp32", "--top-k", "5"]  # fmt: skip
    done = hosts.run("laptop", "resnet-batch", "submit", "--address", JOB_SERVER, "--wait", "--", *label)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    hosts.tool("get", "s3://rbc-data/ref-out", "/tmp/ref-out")
    table = pq.read_table(hosts.tmp("laptop") / "ref-out")
    by_name = {p.name: str(p) for p in local}
    table = table.set_column(0, "path", [[by_name[p.rsplit("/", 1)[-1]] for p in table.column("path").to_pylist()]])
    embeddings, logits = reference_outputs("resnet18", checkpoint, "IMAGENET1K_V1", local)
    check_against_reference(table, embeddings, logits, top_k=5)


def test_worker_hosts_killed_one_then_the_other(hosts):
    """One worker host killed mid-job: the job finishes on the other. Both killed: it says what
    it waits for, and finishes when a host returns."""
    job = _submit(hosts, "s3://rbc-data/killed")
    try:
        before_first = job.saved_at_least(COUNT // 5)
        hosts.script("kill", "worker-1")
        before_second = job.saved_at_least(before_first + COUNT // 5)
        hosts.script("kill", "worker-2")
        job.wait_for("the wait for CPUs", lambda s: "waiting for 1 CPU" in s and "free of 0" in s)
        hosts.script("restart", "worker-1", timeout=200)
        log = job.end()
    finally:
        for worker in ("worker-1", "worker-2"):
            hosts.script("kill", worker)
            hosts.script("restart", worker, timeout=200)
    assert job.process.returncode == 0 and "complete: every input has exactly one row" in log, log[-3000:]
    assert before_second > before_first
    hosts.exactly_once("s3://rbc-data/killed", _inputs())


def test_a_worker_host_partitioned_for_30_s(hosts):
    job = _submit(hosts, "s3://rbc-data/partitioned")
    try:
        job.saved_at_least(COUNT // 5)
        hosts.script("link-down", "worker-1")
        time.sleep(PARTITION_S)  # the fault's own length: what is tested is the job living through it
    finally:
        hosts.script("link-up", "worker-1")
    log = job.end()
    assert job.process.returncode == 0 and "complete: every input has exactly one row" in log, log[-3000:]
    hosts.exactly_once("s3://rbc-data/partitioned", _inputs())


def test_the_job_servers_link_lost_during_submit_wait(hosts):
    """The laptop's link down 20 s, then its connection to the job server cut: the follower
    reconnects, shows nothing twice, and reports the job's own end (Ray's client raised
    "WebSocket connection closed unexpectedly" and the command failed while the job ran)."""
    slower = {"RESNET_BATCH_NULL_BATCH_SECONDS": "0.2"}  # about 75 s: the job outlasts both faults
    job = _submit(hosts, "s3://rbc-data/followed", env=slower)
    try:
        job.saved_at_least(COUNT // 5)
        hosts.script("link-down", "laptop")
        time.sleep(LINK_DOWN_S)  # the fault's own length
    finally:
        hosts.script("link-up", "laptop")
    job.saved_at_least(COUNT // 2)
    assert job.process.poll() is None and saved_in(job.lines[-1]) < COUNT, "the job must still run when cut off"
    cut = hosts.run("laptop", "ss", "-K", "dst", "198.18.0.2", "dport", "=", "8265")
    assert cut.returncode == 0, cut.stderr
    log = job.end()
    assert job.process.returncode == 0 and log.splitlines()[-1].endswith(" SUCCEEDED"), log[-3000:]
    assert "stopped answering" in log and "reconnecting" in log, log[-3000:]
    assert sum(line.startswith("Running entrypoint") for line in log.splitlines()) == 1, log[-3000:]
    hosts.exactly_once("s3://rbc-data/followed", _inputs())


def test_the_storage_host_down_20_s_then_past_the_retry_budget(hosts):
    """20 s without the S3 host: the bar says the job waits for storage, and it finishes.
    Down past RESNET_BATCH_STORAGE_RETRY_S: the job stops saying what it saved and how to
    resume (a botocore error escaped as a bare one-line failure); the rows it counted are there."""
    job = _submit(hosts, "s3://rbc-data/stored")
    try:
        job.saved_at_least(COUNT // 5)
        hosts.script("link-down", "s3")
        job.wait_for("the bar waiting", lambda s: "waiting for storage" in s)
        time.sleep(LINK_DOWN_S)  # the fault's own length
    finally:
        hosts.script("link-up", "s3")
    log = job.end()
    assert job.process.returncode == 0 and "complete: every input has exactly one row" in log, log[-3000:]
    hosts.exactly_once("s3://rbc-data/stored", _inputs())

    job = _submit(hosts, "s3://rbc-data/budget", env={"RESNET_BATCH_STORAGE_RETRY_S": "5"})
    try:
        job.saved_at_least(COUNT // 5)
        hosts.script("link-down", "s3")
        log = job.end()
    finally:
        hosts.script("link-up", "s3")
    stop = next((line for line in log.splitlines() if "the store stopped answering" in line), "")
    assert job.process.returncode == 1 and stop, log[-3000:]
    saved = int(found(r"this run saved (\d+) rows", stop).group(1))
    assert saved >= COUNT // 5 and "--mode resume" in stop, stop
    assert hosts.tool("outcome", "s3://rbc-data/budget")["rows"] >= saved
    resume = _submit(hosts, "s3://rbc-data/budget", "--mode", "resume")
    log = resume.end()
    assert resume.process.returncode == 0 and "complete: every input has exactly one row" in log, log[-3000:]
    hosts.exactly_once("s3://rbc-data/budget", _inputs())


def test_the_drivers_host_killed_then_resumed_from_another(hosts):
    """`label --address` on a worker host, that host killed: a resume from another host finds
    the dead driver's lease, says when it is free, and then finishes the job."""
    stale = {"RESNET_BATCH_LEASE_STALE_S": "30"}
    label = ["resnet-batch", "label", INPUTS, "--output", "s3://rbc-data/driven", "--address", HEAD, *NULL_JOB]
    job = hosts.start("worker-1", *label, env=stale)
    try:
        saved = job.saved_at_least(COUNT // 5)
        hosts.script("kill", "worker-1")
        job.end()
        # At once, the lease is at most a few seconds unrenewed: the line says when it is free.
        refused = hosts.run("worker-2", *label, "--mode", "resume", env=stale)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "the output is free once its lease is 30 s unrenewed" in refused.stderr, refused.stderr
    finally:
        hosts.script("restart", "worker-1", timeout=200)
    assert hosts.tool("outcome", "s3://rbc-data/driven")["rows"] >= saved
    deadline = time.monotonic() + 120
    while True:
        resumed = hosts.run("worker-2", *label, "--mode", "resume", env=stale)
        if resumed.returncode != 2 or time.monotonic() > deadline:
            break
        time.sleep(1)  # until the dead driver's lease is stale
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over the stale lease" in resumed.stderr
    hosts.exactly_once("s3://rbc-data/driven", _inputs())
