"""Stopping a job: SIGTERM and Ctrl-C save the finished work, say so in one line, exit 128+N,
leave no Ray process behind; --mode resume then does only the rest, and every input ends up
with exactly one row. Saves happen every --checkpoint-every seconds, whatever --rows-per-file."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time

import pyarrow.parquet as pq
import pytest

from resnet_batch.model.null import BATCH_SECONDS_VARIABLE

from .conftest import write_jpegs
from .helpers import RESNET_BATCH, found, in_process, kill_session, piped, session_processes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STOPPED = re.compile(r"^stopped by (SIG\w+): (\d+) images labeled and saved; to finish: (.+ --mode resume)$")


# Slow by construction, on any machine: one null-model actor whose batches of 4 take a
# quarter of a second each (asleep). The default --rows-per-file (10000) would hold every
# row until the end: --checkpoint-every 1 saves them as the job goes.
SLOW_MODEL = {BATCH_SECONDS_VARIABLE: "0.25"}


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
        "4",
        "--top-k",
        "1",
        "--checkpoint-every",
        "1",
        "--progress-every",
        "600",
        "--mode",
        mode,
    ]


def start(cmd) -> subprocess.Popen:
    """The job in a session of its own (its Ray's processes too), the slow model where they run."""
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **SLOW_MODEL},
    )


def saved_rows(out) -> int:
    return sum(pq.read_metadata(p).num_rows for p in out.glob("part-*.parquet"))


def stop_after_first_saves(cmd, out, signum, whole_group: bool, at_least: int):
    job = start(cmd)
    deadline = time.monotonic() + 240
    while saved_rows(out) < at_least:
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline, "nothing was saved"
        time.sleep(0.2)
    # A terminal's Ctrl-C reaches the whole foreground process group; `kill PID` the driver only.
    (os.killpg if whole_group else os.kill)(job.pid, signum)
    stdout, stderr = job.communicate(timeout=120)
    deadline = time.monotonic() + 20
    while session_processes(job.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = session_processes(job.pid)
    if left:  # clean up before failing
        kill_session(job.pid)
    assert not left, left
    return job.returncode, stdout, stderr


def test_signals_save_work_and_resume_finishes_it(ray_local, tmp_path):
    src, n = tmp_path / "in", 120
    write_jpegs(src, n, seed=7)
    out = tmp_path / "out"

    # 1. SIGTERM to the driver alone (a scheduler, `kill PID`).
    code, stdout, stderr = stop_after_first_saves(
        label_cmd(src, out, "error"), out, signal.SIGTERM, whole_group=False, at_least=4
    )
    assert code == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    said = found(STOPPED, lines[0])
    assert said.group(1) == "SIGTERM"
    first = saved_rows(out)
    assert int(said.group(2)) == first and 0 < first < n
    assert not list(out.glob("_tmp-*"))

    # 2. Resume, and press Ctrl-C in the middle of it.
    resume = shlex.split(said.group(3))
    assert resume[:2] == ["resnet-batch", "label"] and resume[-2:] == ["--mode", "resume"]
    resume_cmd = [*RESNET_BATCH, *resume[1:]]
    code, stdout, stderr = stop_after_first_saves(resume_cmd, out, signal.SIGINT, whole_group=True, at_least=first + 4)
    assert code == 128 + signal.SIGINT, stderr
    assert "Traceback" not in stdout + stderr and STOPPED.match(stderr.strip()), stderr
    second = saved_rows(out)
    assert int(found(STOPPED, stderr.strip()).group(2)) == second - first and first < second < n

    # 3. Resume to the end (no signal: through main() on the suite's Ray): only what is not on
    # disk is labeled.
    done = in_process(*resume[1:])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"inputs {n}, already done {second}, processed {n - second}, rows in output {n}" in done.stdout
    paths = pq.read_table(out, columns=["path"]).column("path").to_pylist()
    assert len(paths) == n and set(paths) == {str(p) for p in src.iterdir()}


def test_a_run_that_fails_before_any_row_leaves_the_output_untouched(tmp_path):
    """--device cuda where Ray has no GPU fails cleanly, leaving the output as it was."""
    from .conftest import write_jpegs as make

    src = tmp_path / "in"
    make(src, 3, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    # An older run's part file (its footer says so), for --mode overwrite to replace.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from resnet_batch.core.columns import with_run_metadata

    older = pa.table({"path": ["/older.jpg"]})
    pq.write_table(
        older.replace_schema_metadata(with_run_metadata(older.schema, {"model": "resnet18"}).metadata),
        out / "part-kept.parquet",
    )
    kept = (out / "part-kept.parquet").read_bytes()
    base = [
        *RESNET_BATCH,
        "label",
        str(src),
        "--output",
        str(out),
        "--model",
        "resnet18",
        "--weights",
        "none",
        "--mode",
        "overwrite",
    ]
    # No GPU for its Ray, whatever the machine has.
    failed = subprocess.run(
        [*base, "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert failed.returncode == 2 and "no GPUs" in failed.stderr, failed.stderr
    assert [p.name for p in out.iterdir()] == ["part-kept.parquet"]
    assert (out / "part-kept.parquet").read_bytes() == kept


PROGRESS = re.compile(r"labeling: (\d+)/\d+\+? images \([\d.]+%\), (\d+) saved")


def test_a_stop_keeps_every_row_the_progress_lines_counted(tmp_path):
    """Rows reach part files as the job runs (not when it ends), and a SIGTERM keeps at least
    every row a progress line had counted when it came; the stop's line equals the rows on disk."""
    src, n = tmp_path / "in", 80
    write_jpegs(src, n, seed=3)
    out = tmp_path / "out"
    cmd = label_cmd(src, out, "error")
    cmd[cmd.index("--progress-every") + 1] = "1"
    job = start(cmd)
    counted, saved_while_running, lines = 0, 0, []
    try:
        for line in piped(job.stderr):  # one progress line a second: wait on them, never on time
            lines.append(line)
            seen = PROGRESS.search(line)
            if not seen:
                continue
            counted = int(seen.group(1))
            saved_while_running = max(saved_while_running, int(seen.group(2)))
            # Stop once part files have landed while rows are still being labeled.
            if saved_while_running and counted > saved_while_running and counted < n - 12:
                break
        else:
            pytest.fail("the job ended before it saved while running:\n" + "".join(lines[-20:]))
        assert saved_rows(out) >= saved_while_running > 0  # "saved" counts rows in part files
        os.kill(job.pid, signal.SIGTERM)
        rest = piped(job.stderr).read()
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            kill_session(job.pid)
    assert job.returncode == 128 + signal.SIGTERM, rest
    said = next((m for m in map(STOPPED.match, rest.splitlines()) if m), None)
    assert said, rest
    on_disk = saved_rows(out)
    assert int(said.group(2)) == on_disk >= counted, rest
    paths = pq.read_table(out, columns=["path"]).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == on_disk


STARTED = re.compile(r"^\d\d:\d\d:\d\d (starting \d+ model actor|first batch|labeling)")


@pytest.mark.parametrize("moment", ["starting", "first batch"])
def test_a_sigterm_as_the_dataset_starts_says_what_it_saved(tmp_path, moment):
    """A few hundred inputs, SIGTERM at the progress line that shows the running dataset
    (its model actors starting, or its first batch on the way): exit 143, one last line with
    the rows saved, which are the rows on disk, and no process of its Ray left."""
    src, n = tmp_path / "in", 300
    write_jpegs(src, n, seed=11, height=96, width=128)
    out = tmp_path / "out"
    cmd = label_cmd(src, out, "error")
    cmd[cmd.index("--progress-every") + 1] = "0.1"
    job = start(cmd)
    lines = []
    try:
        for line in piped(job.stderr):  # wait on the job's own lines, never on time
            lines.append(line)
            seen = STARTED.match(line)
            if seen and (moment == "starting" or not seen.group(1).startswith("starting")):
                break
        else:
            pytest.fail("the job ended before the dataset ran:\n" + "".join(lines[-20:]))
        os.kill(job.pid, signal.SIGTERM)
        rest = piped(job.stderr).read()
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            kill_session(job.pid)
    assert job.returncode == 128 + signal.SIGTERM, "".join(lines[-5:]) + rest
    assert "Traceback" not in rest
    last = rest.strip().splitlines()[-1]
    said = STOPPED.match(last)
    assert said and said.group(1) == "SIGTERM", last
    assert int(said.group(2)) == saved_rows(out)
    deadline = time.monotonic() + 20
    while session_processes(job.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not session_processes(job.pid)


def test_a_signal_during_a_ray_wait_stops_the_wait_with_its_own_name(tmp_path, ray_local):
    """Ray's wait loop runs the job's signal handler itself: what the handler raises must stop
    ray.get at once and still say which signal it was, not surface as a SystemError once the
    awaited task ends (the stop lost, every later signal ignored)."""
    from resnet_batch.cli.console import raising_on_signals
    from resnet_batch.core.errors import Interrupted

    started, release = tmp_path / "started", tmp_path / "release"

    @ray_local.remote
    def waits_for_release() -> str:
        started.touch()
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return "ended"

    def signal_once_started():
        while not started.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    ref = waits_for_release.remote()
    sender = threading.Thread(target=signal_once_started, daemon=True)
    with raising_on_signals():
        sender.start()
        try:
            with pytest.raises(KeyboardInterrupt) as raised:
                ray_local.get(ref)
            task_ended = release.exists()
        finally:
            release.touch()
    sender.join()
    assert not task_ended and Interrupted.of(raised.value).signum == signal.SIGTERM
    assert ray_local.get(ref) == "ended"
