"""Two writers, one output: a job paused past its lease's stale limit wakes up beside the
job that took the output over, and adds no row; a resume keeps one row per input whatever
the output held. Through the command line, each job in a process of its own (a pause is a
process's: SIGSTOP, as a closed laptop or a partitioned host)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from resnet_batch.output.lease_record import LEASE_FILE, STALE_VARIABLE, lease_state
from resnet_batch.output.part_names import OUR_PART
from resnet_batch.output.writer import OutputDir

from .conftest import write_jpegs
from .helpers import RESNET_BATCH, in_process, kill_session

pytestmark = pytest.mark.e2e  # runs the command, or Ray, in processes of its own


PIPELINE_JOB = ["--model", "none", "--precision", "fp32", "--batch-size", "8"]


def _wait_for(what: str, ready, process: subprocess.Popen | None = None, limit_s: float = 180) -> None:
    """Until `ready()` (a file or a lease seen on disk), polling the disk; fails if `process` ends first."""
    deadline = time.monotonic() + limit_s
    while not ready():
        assert process is None or process.poll() is None, f"{what}: the job ended first ({process.returncode})"
        assert time.monotonic() < deadline, f"{what}: not within {limit_s} s"
        time.sleep(0.05)


def _marks(out: Path) -> Counter:
    return Counter(m.group("mark") for p in out.glob("part-*.parquet") if (m := OUR_PART.fullmatch(p.name)))


def _token(out: Path) -> str | None:
    try:
        return json.loads((out / LEASE_FILE).read_text())["token"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


def test_a_paused_job_adds_no_row_after_its_lease_is_taken_over(tmp_path, monkeypatch):
    inputs = write_jpegs(tmp_path / "in", 400, seed=44, height=8, width=8)
    out = tmp_path / "out"
    monkeypatch.setenv(STALE_VARIABLE, "4")  # for the jobs, and for lease_state here
    env = {**os.environ, "RESNET_BATCH_NULL_BATCH_SECONDS": "0.15"}
    label = [*RESNET_BATCH, "label", str(tmp_path / "in"), "--output", str(out), *PIPELINE_JOB]
    label += ["--checkpoint-every", "1", "--rows-per-file", "16"]
    first = subprocess.Popen(
        label, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    second = None
    try:
        _wait_for("the first job's parts", lambda: sum(_marks(out).values()) >= 2, first)
        first_token = _token(out)
        os.kill(first.pid, signal.SIGSTOP)
        fs, path = OutputDir(str(out)).fs, str(out)
        _wait_for("the lease goes stale", lambda: (lease_state(fs, path) or "").startswith("stale"))
        second = subprocess.Popen(
            [*label, "--mode", "resume"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        _wait_for("the takeover", lambda: _token(out) not in (None, first_token), second)
        taker_mark = str(_token(out))[:16]
        _wait_for("the second job's first part", lambda: _marks(out)[taker_mark] >= 1, second)
        os.kill(first.pid, signal.SIGCONT)  # wakes up beside the job that holds the output now
        first_out, first_err = first.communicate(timeout=240)
        second_out, second_err = second.communicate(timeout=300)
    finally:
        for job in (first, second):
            if job is not None:
                os.kill(job.pid, signal.SIGCONT) if job.poll() is None else None
                kill_session(job.pid)
    said = [line for line in first_err.strip().splitlines() if not line[:2].isdigit()]
    assert first.returncode == 1 and len(said) == 1, first_err
    assert "is no longer this job's: another job took it over" in said[0]
    assert second.returncode == 0, second_err
    assert "complete: every input has exactly one row" in second_out
    paths = pq.read_table(out).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == len(inputs), (len(paths), len(set(paths)))
    again = in_process("label", str(tmp_path / "in"), "--output", str(out), *PIPELINE_JOB, "--mode", "resume")
    assert again.returncode == 0 and f"already done {len(inputs)}" in again.stdout, again.stdout + again.stderr


def test_a_resume_keeps_one_row_per_input(tmp_path, ray_local):
    """An output holding two rows for some inputs (a part copied under another valid name,
    or left by an older writer): the resume keeps the first, sets the rest aside, says so."""
    inputs = write_jpegs(tmp_path / "in", 20, seed=45, height=8, width=8)
    out = tmp_path / "out"
    label = ["label", str(tmp_path / "in"), "--output", str(out), *PIPELINE_JOB, "--rows-per-file", "5"]
    assert in_process(*label).returncode == 0
    parts = sorted(out.glob("part-*.parquet"))
    shutil.copy(parts[0], out / ("part-" + "f" * 24 + ".parquet"))  # a copy: each of its rows twice
    mixed = pq.read_table(parts[1]).slice(0, 2)
    pq.write_table(mixed, out / ("part-" + "e" * 24 + ".parquet"))  # two repeats, in a part of its own
    repeats = pq.read_metadata(parts[0]).num_rows + 2
    assert pq.read_table(out).num_rows == len(inputs) + repeats
    result = in_process(*label, "--mode", "resume")
    assert result.returncode == 0, result.stderr
    assert f"held {repeats} rows beyond the first for {repeats} inputs" in result.stderr
    assert "complete: every input has exactly one row" in result.stdout
    paths = pq.read_table(out).column("path").to_pylist()
    assert sorted(paths) == sorted(str(p) for p in inputs)
    assert len(list(out.glob("_repeats-part-*.parquet"))) == 2
