"""Submit through the Ray Jobs API to a real `ray start --head` with token authentication."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .helpers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "images"


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    pytest.importorskip("ray.dashboard", reason="the job server needs ray[default]")
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard, agent_http, agent_grpc, metrics = (free_port() for _ in range(5))
    temp = tmp_path_factory.mktemp("ray_head")
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            "--num-cpus=2",
            f"--temp-dir={temp}",
            # Another local Ray (the tests' own) may hold the default agent and metrics ports.
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    probe = f"from ray.job_submission import JobSubmissionClient as C; C({address!r}).list_jobs()"
    try:
        # Ray's client reads RAY_AUTH_MODE at import, so probe from a process with the head's env.
        deadline = time.monotonic() + 120
        while subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, "ray head did not come up"
            time.sleep(1)
        yield address, env, token, f"127.0.0.1:{gcs}"
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # SIGTERM would leave raylet and GCS running
        head.wait()


def cli(env, *args, timeout=400):
    return subprocess.run(
        [sys.executable, "-m", "resnet_batch", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_submit_wait_succeeds_and_writes_output(ray_head, tmp_path):
    address, env, token, _ = ray_head
    out = tmp_path / "out"
    result = cli(
        env,
        "submit",
        "--address",
        address,
        "--wait",
        "--submission-id",
        "rb-ok-1",
        "--metadata",
        "owner=tests",
        "--",
        "label",
        str(EXAMPLES),
        "--output",
        str(out),
        "--model",
        "none",  # the whole pipeline, shipped and run by the job server; rows' values are tested elsewhere
        "--progress-every",
        "1",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "submitted rb-ok-1" in result.stdout and "job rb-ok-1 SUCCEEDED" in result.stdout
    assert "complete: every input has exactly one row" in result.stdout  # the job's own summary, streamed
    assert token not in result.stdout + result.stderr
    assert pq.read_table(out).num_rows == len(list(EXAMPLES.iterdir()))

    status = cli(env, "jobs", "status", "rb-ok-1", "--address", address)
    assert status.returncode == 0 and '"status": "SUCCEEDED"' in status.stdout and '"owner": "tests"' in status.stdout
    n = len(list(EXAMPLES.iterdir()))
    # An ended job's last word, from its log: the summary's counts (every saved row).
    assert f'"progress": "inputs {n}, already done 0, processed {n}, rows in output {n}"' in status.stdout, (
        status.stdout
    )
    logs = cli(env, "jobs", "logs", "rb-ok-1", "--address", address)
    assert "errors: decode_error 1" in logs.stdout and token not in logs.stdout and logs.stdout.endswith("\n")
    followed = cli(env, "jobs", "logs", "rb-ok-1", "--follow", "--address", address)
    assert followed.returncode == 0 and followed.stdout.rstrip().endswith("job rb-ok-1 SUCCEEDED"), followed.stdout


def test_jobs_find_the_last_submits_server_list_and_name_unknown_ids(ray_head, tmp_path):
    address, env, _, _ = ray_head
    env = {**env, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = tmp_path / "listed"
    submitted = cli(
        env,
        "submit",
        "--address",
        address,
        "--submission-id",
        "rb-list-1",
        "--",
        "label",
        str(EXAMPLES),
        "--output",
        str(out),
        "--model",
        "none",
    )
    assert submitted.returncode == 0, submitted.stderr
    for hint in (
        f"resnet-batch jobs logs rb-list-1 --follow --address {address}",
        f"resnet-batch jobs stop rb-list-1 --address {address}",
        f"resnet-batch jobs list --address {address}",
    ):
        assert hint in submitted.stdout, submitted.stdout

    listed = cli(env, "jobs", "list")  # no --address, no RAY_ADDRESS: the last submit's server
    assert listed.returncode == 0, listed.stderr
    assert f"job server {address} (the last submit's)" in listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("rb-list-1 "))
    assert str(out) in row and ("PENDING" in row or "RUNNING" in row or "SUCCEEDED" in row), listed.stdout
    assert listed.stdout.splitlines()[0].split() == ["ID", "STATUS", "START", "PROGRESS", "OUTPUT"]

    unknown = cli(env, "jobs", "status", "rb-no-such-job")
    lines = unknown.stderr.strip().splitlines()
    assert unknown.returncode == 2 and lines[-1].startswith(f"resnet-batch: error: no job rb-no-such-job on {address}")
    assert "404" not in unknown.stderr and "Traceback" not in unknown.stderr


def test_failing_job_reports_failure(ray_head, tmp_path):
    address, env, _, _ = ray_head
    result = cli(
        env,
        "submit",
        "--address",
        address,
        "--wait",
        "--submission-id",
        "rb-bad-1",
        "--",
        "label",
        str(EXAMPLES),
        "--output",
        str(tmp_path / "o"),
        "--model",
        "resnet99",
    )
    assert result.returncode == 1
    assert "valid: resnet18, resnet34, resnet50, resnet101, resnet152" in result.stdout
    assert "job rb-bad-1 FAILED" in result.stdout
    status = cli(env, "jobs", "status", "rb-bad-1", "--address", address)
    assert '"status": "FAILED"' in status.stdout


def test_submit_without_label_command(tmp_path):
    result = cli(os.environ.copy(), "submit", "--address", "http://127.0.0.1:9", "--", "models")
    assert result.returncode == 2 and "only 'label' jobs can be submitted" in result.stderr


def test_label_joining_a_token_head_without_the_token_says_how(ray_head, tmp_path):
    """`label --address` to a head that requires a token, from a shell without one: one line
    that says what to set, exit 2, nothing written."""
    _, env, _, gcs = ray_head
    bare = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    out = tmp_path / "out"
    result = cli(bare, "label", str(EXAMPLES), "--output", str(out), "--weights", "none", "--address", gcs, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert (
        "if the cluster requires a token (RAY_AUTH_MODE=token on its nodes), set RAY_AUTH_MODE=token and "
        "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) here too" in last
    ), result.stderr[-2000:]
    assert not out.exists() or not any(out.iterdir())


def test_a_jobs_progress_is_its_last_word_or_its_latest_line_with_its_time():
    from resnet_batch.cli.cluster_jobs import last_progress_line

    running = "12:00:01 labeling: 10 images so far, 8 saved, 0 errors, rate not yet known\n"
    running += "12:00:31 labeling: 224/500 images (44.8%), 224 saved, 0 errors, 7.1 images/s, ETA 0:00:39\n"
    assert last_progress_line(running) == (
        "labeling: 224/500 images (44.8%), 224 saved, 0 errors, 7.1 images/s, ETA 0:00:39 (at 12:00:31)"
    )
    stopped = running + "stopped by SIGTERM: 288 images labeled and saved; to finish: resnet-batch label ...\n"
    assert last_progress_line(stopped) == "stopped by SIGTERM: 288 images labeled and saved"
    ended = running + "inputs 500, already done 0, processed 500, rows in output 500 (0 errors)\n"
    assert last_progress_line(ended) == "inputs 500, already done 0, processed 500, rows in output 500"
    assert last_progress_line("nothing yet\n") is None
