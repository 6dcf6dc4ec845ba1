"""SIGKILL the driver and its Ray mid-job, then --mode resume: every input exactly once, done
work not redone."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from resnet_batch.model.null import BATCH_SECONDS_VARIABLE

from .conftest import write_jpegs
from .helpers import RESNET_BATCH, kill_session, piped

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def label_cmd(src, out, mode):
    return [
        *RESNET_BATCH,
        "label",
        str(src),
        "--output",
        str(out),
        "--model",
        "none",
        "--num-workers",
        "1",
        "--batch-size",
        "2",
        "--rows-per-file",
        "4",
        "--mode",
        mode,
        "--top-k",
        "1",
    ]


def test_sigkill_driver_then_resume(tmp_path):
    src, n = tmp_path / "in", 48
    write_jpegs(src, n, seed=5)
    out = tmp_path / "out"

    # Slow by construction: the null model's batches of 2 take a quarter of a second each.
    driver = subprocess.Popen(
        label_cmd(src, out, "error"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, BATCH_SECONDS_VARIABLE: "0.25"},
    )
    try:
        deadline = time.monotonic() + 240
        while len(list(out.glob("part-*.parquet"))) < 2:
            assert driver.poll() is None, piped(driver.stdout).read().decode()[-3000:]
            assert time.monotonic() < deadline, "no output appeared"
            time.sleep(0.1)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        # Then every process of its Ray (its session: workers Ray renamed included), at
        # whatever point each is, a write task's too: what is on disk is what survives.
        kill_session(driver.pid)
        piped(driver.stdout).close()

    survivors = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    done = sum(pq.read_metadata(out / name).num_rows for name in survivors)
    assert 0 < done < n, "the kill must land mid-job"
    for name in survivors:  # every visible file is complete and readable
        assert pq.read_table(out / name).num_rows > 0

    resumed = subprocess.run(label_cmd(src, out, "resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"inputs {n}, already done {done}, processed {n - done}, rows in output {n}" in resumed.stdout

    # Completed files were neither rewritten nor duplicated.
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet") if p.name in survivors} == survivors
    paths = pq.read_table(out, columns=["path"]).column("path").to_pylist()
    assert len(paths) == n and set(paths) == {str(p) for p in src.iterdir()}
    assert not list(out.glob("_tmp-*"))
