"""Inputs lost or swapped by their names, and how a job stops and speaks, through the
command line: brackets that are names, spaces that are names, tar members named like
shards, manifest columns named like the pipeline's own; special files as export targets,
a CSV that changes type, an output removed or damaged under the job, a run record that is
a folder, and the Ray a killed driver leaves behind."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import write_jpegs
from .helpers import RESNET_BATCH, in_process, kill_session, piped

pytestmark = pytest.mark.e2e  # runs the command, or Ray, in processes of its own


PIPELINE_JOB = ["--model", "none", "--precision", "fp32", "--batch-size", "8"]


def _label(*args: str, env: dict | None = None):
    return in_process("label", *args, *PIPELINE_JOB, env=env)


def _errors(out: Path) -> dict:
    table = pq.read_table(out)
    return dict(zip(table.column("path").to_pylist(), table.column("error").to_pylist(), strict=True))


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if not line[:2].isdigit()]  # not progress lines


def test_an_existing_path_is_never_a_glob(tmp_path, ray_local):
    photos = write_jpegs(tmp_path / "photos[2024]", 2, seed=1)
    (tmp_path / "q1.jpg").write_bytes(photos[0].read_bytes())
    (tmp_path / "q[1].jpg").write_bytes(photos[1].read_bytes())
    result = _label(str(tmp_path / "photos[2024]"), str(tmp_path / "q[1].jpg"), "--output", str(tmp_path / "out"))
    assert result.returncode == 0 and "complete: every input has exactly one row" in result.stdout, result.stderr
    assert _errors(tmp_path / "out") == {str(p): None for p in [*photos, tmp_path / "q[1].jpg"]}
    # Where nothing by that name exists, brackets still make a pattern.
    result = _label(str(tmp_path / "q[0-9].jpg"), "--output", str(tmp_path / "glob"))
    assert result.returncode == 0 and list(_errors(tmp_path / "glob")) == [str(tmp_path / "q1.jpg")]


def test_names_are_taken_as_they_are(tmp_path, ray_local):
    """A manifest entry ending in a space is that file; a tar member named `inner.tar/x.jpg`
    is read from its shard; a tar in a tar, and a shard cut inside a header, get rows saying
    so; manifest columns named like the pipeline's internal ones are the manifest's own."""
    photos = write_jpegs(tmp_path / "in", 2, seed=2)
    spaced = tmp_path / "in" / "a.jpg "
    spaced.write_bytes(photos[0].read_bytes())
    jpeg = photos[1].read_bytes()
    with tarfile.open(tmp_path / "inner.tar", "w") as inner:
        inner.addfile(_info("x.jpg", jpeg), io.BytesIO(jpeg))
    with tarfile.open(tmp_path / "outer.tar", "w") as outer:
        outer.addfile(_info("inner.tar/x.jpg", jpeg), io.BytesIO(jpeg))
        nested = (tmp_path / "inner.tar").read_bytes()
        outer.addfile(_info("nested.tar", nested), io.BytesIO(nested))
        outer.addfile(_info("y.jpg", jpeg), io.BytesIO(jpeg))
    whole = (tmp_path / "outer.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(whole[: whole.index(b"y.jpg") + 200])  # inside y.jpg's header
    manifest = tmp_path / "list.csv"
    manifest.write_text(f'path,_list_error,_bytes\n"{spaced}",fake error,xx\n{photos[1]},,\n')
    result = _label(
        str(manifest), str(tmp_path / "outer.tar"), str(tmp_path / "cut.tar"), "--output", str(tmp_path / "o")
    )
    assert result.returncode == 0 and "complete: every input has exactly one row" in result.stdout, result.stderr
    errors = _errors(tmp_path / "o")
    assert errors[str(spaced)] is None and errors[str(photos[1])] is None
    assert errors[f"{tmp_path}/outer.tar/inner.tar/x.jpg"] is None
    assert errors[f"{tmp_path}/outer.tar/y.jpg"] is None
    assert errors[f"{tmp_path}/outer.tar/nested.tar"].startswith("nested_shard: a tar shard inside a tar shard")
    assert errors[f"{tmp_path}/cut.tar/inner.tar/x.jpg"] is None
    assert errors[str(tmp_path / "cut.tar")].startswith("list_failed: cannot read tar shard")
    assert "header is cut short" in errors[str(tmp_path / "cut.tar")]
    table = pq.read_table(tmp_path / "o")
    assert sorted(v for v in table.column("_list_error").to_pylist() if v) == ["fake error"]


def _info(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def test_csv_manifests_that_say_nothing_or_change_type(tmp_path, ray_local):
    (tmp_path / "empty.csv").write_text("path,label\n")
    empty = _label(str(tmp_path / "empty.csv"), "--output", str(tmp_path / "e"))
    assert empty.returncode == 0 and "StopIteration" not in empty.stderr, empty.stderr
    assert "WARNING: no inputs" in empty.stdout + empty.stderr
    photo = write_jpegs(tmp_path / "in", 1, seed=3)[0]
    rows = [f"{photo},{i}" for i in range(400_000)] + [f"{photo}.x,abc"]
    (tmp_path / "typed.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    typed = _label(str(tmp_path / "typed.csv"), "--output", str(tmp_path / "t"))
    lines = _lines(typed.stderr)
    assert typed.returncode in (1, 2) and len(lines) == 1, typed.stderr
    assert "column 'label' holds 'abc' on row 400001, where its first rows made it int64" in lines[0]


def test_special_files_are_written_through_never_replaced(tmp_path, ray_local):
    write_jpegs(tmp_path / "in", 3, seed=4)
    assert _label(str(tmp_path / "in"), "--output", str(tmp_path / "out")).returncode == 0
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = in_process("export", str(tmp_path / "out"), "--format", "csv", "--output", str(fifo))
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert fifo.is_fifo() and got and got[0].count(b"\n") == 4  # a header and three rows
    refused = in_process("export", str(tmp_path / "out"), "--format", "label-studio", "--output", str(fifo))
    assert refused.returncode == 2 and "is not a regular file" in refused.stderr and fifo.is_fifo()


def test_readers_and_resume_survive_a_damaged_output(tmp_path, ray_local):
    """A run record replaced by a folder, a truncated part and a copy under a valid-looking
    name: readers leave out what they cannot trust, naming it; resume repairs the rest."""
    photos = write_jpegs(tmp_path / "in", 12, seed=5)
    out = tmp_path / "out"
    label = [str(tmp_path / "in"), "--output", str(out), "--rows-per-file", "4"]
    assert _label(*label).returncode == 0
    parts = sorted(out.glob("part-*.parquet"))
    (out / "_resnet_batch.json").unlink()
    (out / "_resnet_batch.json").mkdir()
    shutil.copy(parts[0], out / f"part-{'0' * 24}-{'0' * 16}.parquet")  # a valid-looking name, others' paths
    exported = in_process("export", str(out), "--format", "csv", "--output", str(tmp_path / "rows.csv"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "rows.csv").read_text().count("\n") == 1 + len(photos)
    assert f"part-{'0' * 24}-{'0' * 16}.parquet" in exported.stderr and "copies of its part files" in exported.stderr
    assert "IsADirectoryError" not in exported.stderr
    parts[1].write_bytes(parts[1].read_bytes()[:-50])
    report = in_process("report", str(out), "--html", str(tmp_path / "r.html"))
    assert report.returncode == 0 and f"{parts[1].name}: its footer cannot be read" in report.stderr, report.stderr
    resumed = _label(*label, "--mode", "resume")
    assert resumed.returncode == 0 and "complete: every input has exactly one row" in resumed.stdout, resumed.stderr
    assert (out / "_resnet_batch.json").is_file() and (out / "_damaged-_resnet_batch.json").is_dir()
    assert sorted(pq.read_table(out).column("path").to_pylist()) == sorted(str(p) for p in photos)


def _wait_for(ready, process: subprocess.Popen, limit_s: float = 180) -> None:
    deadline = time.monotonic() + limit_s
    while not ready():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _slow_job(tmp_path: Path, images: int = 200) -> tuple[list[str], dict]:
    write_jpegs(tmp_path / "in", images, seed=6, height=8, width=8)
    args = [*RESNET_BATCH, "label", str(tmp_path / "in"), "--output", str(tmp_path / "out"), *PIPELINE_JOB]
    args += ["--checkpoint-every", "1", "--rows-per-file", "16"]
    return args, {**os.environ, "RESNET_BATCH_NULL_BATCH_SECONDS": "0.2"}


def test_the_output_removed_under_a_job(tmp_path):
    args, env = _slow_job(tmp_path)
    job = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _wait_for(lambda: len(list((tmp_path / "out").glob("part-*.parquet"))) >= 2, job)
        shutil.rmtree(tmp_path / "out")
        _, err = job.communicate(timeout=240)
    finally:
        kill_session(job.pid)
    lines = _lines(err)
    assert job.returncode == 1 and len(lines) == 1, err
    assert "the output is gone (removed during the run?)" in lines[0] and "Traceback" not in err, err


def test_a_resume_ends_the_ray_a_killed_driver_left(tmp_path):
    args, env = _slow_job(tmp_path, images=120)
    job = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _wait_for(lambda: '"ray_session"' in _read(tmp_path / "out" / "_resnet_batch.lock"), job)
        os.kill(job.pid, signal.SIGKILL)  # the driver alone: its Ray lives on for a while
        job.wait()
        left = [pid for pid in _session_pids(job.pid) if _running(pid)]
        assert left, "the dead driver's Ray is still running"
        resumed = subprocess.run([*args, "--mode", "resume"], env=env, capture_output=True, text=True, timeout=300)
        still = [pid for pid in left if _running(pid)]  # before this test ends them
    finally:
        kill_session(job.pid)
    assert resumed.returncode == 0, resumed.stderr
    assert f"processes of the Ray the dead job (pid {job.pid}) left running" in resumed.stderr
    assert not still, f"{len(still)} processes of the dead job's Ray outlived the resume"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (FileNotFoundError, ValueError):
        return ""


def _session_pids(sid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_resume_commands_and_names_a_terminal_cannot_print(tmp_path, ray_local):
    """A missing input whose name is not UTF-8 is a row, and the lines that name it print."""
    missing = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    result = in_process("label", os.fsdecode(missing), "--output", str(tmp_path / "o"), *PIPELINE_JOB)
    assert result.returncode == 0 and "UnicodeEncodeError" not in result.stderr, result.stderr
    assert list(_errors(tmp_path / "o").values())[0].startswith("not_found")


def test_a_resume_of_another_jobs_output_is_refused_unless_asked(tmp_path, ray_local):
    first = write_jpegs(tmp_path / "a", 5, seed=7)
    other = write_jpegs(tmp_path / "b", 3, seed=8)
    out = tmp_path / "out"
    assert _label(str(tmp_path / "a"), "--output", str(out)).returncode == 0
    refused = _label(str(tmp_path / "b"), "--output", str(out), "--mode", "resume")
    lines = _lines(refused.stderr)
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert f"holds {len(first)} rows of inputs this run does not list" in lines[0] and "--add-to-output" in lines[0]
    assert sorted(pq.read_table(out).column("path").to_pylist()) == sorted(str(p) for p in first)
    added = _label(str(tmp_path / "b"), "--output", str(out), "--mode", "resume", "--add-to-output")
    assert added.returncode == 0, added.stderr
    assert (
        f"complete: every input of this run has exactly one row; the output also holds {len(first)} rows of "
        "inputs this run does not list"
    ) in added.stdout
    assert pq.read_table(out).num_rows == len(first) + len(other)
    summary = tmp_path / "summary.json"
    again = _label(
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        "--output",
        str(out),
        "--mode",
        "resume",
        "--summary-json",
        str(summary),
    )
    import json

    said = json.loads(summary.read_text())
    assert again.returncode == 0 and said["complete"] and said["inputs"] == 8 and said["already_done"] == 8
    assert said["outside"] == 0 and said["output"] == str(out) and set(said["seconds"]) >= {"wall", "steady"}


def test_a_dry_run_counts_and_estimates_without_weights(tmp_path, ray_local):
    """Pretrained weights (not on this machine, and no network) are resolved by name only;
    the inputs are counted; the estimate says how it was obtained, measured with --calibrate."""
    write_jpegs(tmp_path / "in", 40, seed=9)
    plan = in_process(
        "label",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "o"),
        "--model",
        "resnet50",
        "--dry-run",
        env={"TORCH_HOME": str(tmp_path / "no-weights")},
    )
    assert plan.returncode == 0, plan.stderr
    assert "  inputs: 40 listed in " in plan.stdout
    assert "  estimate: " in plan.stdout and "a rough guide: resnet50's forward" in plan.stdout
    assert not (tmp_path / "no-weights").exists() and not (tmp_path / "o").exists()
    measured = in_process(
        "label", str(tmp_path / "in"), "--output", str(tmp_path / "o"), *PIPELINE_JOB, "--dry-run", "--calibrate", "32"
    )
    assert measured.returncode == 0, measured.stderr
    line = next(x for x in measured.stdout.splitlines() if x.startswith("  estimate: "))
    assert "measured here: 32 inputs labeled into a temporary folder (--calibrate)" in line, line
    assert float(line.split("estimate: ")[1].split(" images/s")[0]) > 0 and not (tmp_path / "o").exists()
    refused = in_process("label", str(tmp_path / "in"), "--output", str(tmp_path / "o"), "--calibrate", "8")
    assert refused.returncode == 2 and "--calibrate N goes with --dry-run" in refused.stderr


def test_a_second_signal_does_not_cut_the_save_short(tmp_path):
    """SIGTERM, then another a moment later, while finished rows are being saved: the stop's
    line says what the output holds, not what was saved before the second signal."""
    args, env = _slow_job(tmp_path, images=160)
    args[args.index("--rows-per-file") + 1] = "4"
    job = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        parts = lambda: len(list((tmp_path / "out").glob("part-*.parquet")))  # noqa: E731
        _wait_for(lambda: parts() >= 2, job)
        os.kill(job.pid, signal.SIGTERM)
        seen = parts()
        while job.poll() is None:  # another SIGTERM each time a part lands while the job stops
            if parts() > seen:
                seen = parts()
                os.kill(job.pid, signal.SIGTERM)
            time.sleep(0.01)
        _, err = job.communicate(timeout=240)
    finally:
        kill_session(job.pid)
    stop = next((line for line in err.splitlines() if line.startswith("stopped by SIGTERM: ")), None)
    assert stop, err[-3000:]
    said = int(stop.split(": ")[1].split(" ")[0])
    assert job.returncode == 143 and said == pq.read_table(tmp_path / "out").num_rows, (stop, err[-2000:])


def test_paths_holding_the_old_separator_each_keep_their_row(tmp_path, ray_local):
    """A path with a newline in it (a file so named, in a quoted CSV cell) and the two paths
    the newline separates: three inputs, three rows, and resumes that find nothing to do."""
    photos = write_jpegs(tmp_path / "in", 2, seed=10)
    joined = tmp_path / "in" / f"{photos[0].name}\n{photos[1]}"  # one file: its name has a newline
    joined.parent.mkdir(parents=True)
    joined.write_bytes(photos[0].read_bytes())
    assert str(joined) == "\n".join(str(p) for p in photos)  # what named parts once, for both
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\n" + "".join(f'"{p}"\n' for p in (photos[0], photos[1], joined)))
    label = [
        str(manifest),
        "--output",
        str(tmp_path / "o"),
        "--rows-per-file",
        "1",
        "--model",
        "resnet18",
        "--weights",
        "none",
    ]
    first = _label(*label)
    assert first.returncode == 0 and "complete: every input has exactly one row" in first.stdout, first.stderr
    assert sorted(pq.read_table(tmp_path / "o").column("path").to_pylist()) == sorted(str(p) for p in (*photos, joined))
    for _ in range(2):
        again = _label(*label, "--mode", "resume")
        assert again.returncode == 0 and "already done 3, processed 0, rows in output 3" in again.stdout


def test_a_signal_during_the_final_check_stops_cleanly(tmp_path):
    """SIGINT once the final check has begun: it waits for the check, then the job stops,
    saying the rows it saved (never a SystemError from inside pyarrow)."""
    args, env = _slow_job(tmp_path, images=120)
    args[args.index("--rows-per-file") + 1] = "1"  # many parts: a check of some length
    job = subprocess.Popen(
        [*args, "-v"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        for line in piped(job.stderr):
            if "final check: every input has exactly one row?" in line:
                os.kill(job.pid, signal.SIGINT)
                break
        out, err = job.communicate(timeout=240)
    finally:
        kill_session(job.pid)
    assert "SystemError" not in err and "Traceback" not in err.split("final check")[-1], err[-3000:]
    assert job.returncode in (0, 130), err[-3000:]
    if job.returncode == 130:
        stop = next(line for line in err.splitlines() if line.startswith("stopped by SIGINT: "))
        assert int(stop.split(": ")[1].split(" ")[0]) == pq.read_table(tmp_path / "out").num_rows == 120


def test_a_folder_that_changes_during_a_resume_is_finished_by_that_resume(tmp_path):
    """Images added to a walked folder between the resume's count and its pipeline's walk
    (which moves every later rank): the one resume labels them all, exactly once."""
    args, env = _slow_job(tmp_path, images=40)
    env["RESNET_BATCH_NULL_BATCH_SECONDS"] = "0"
    assert subprocess.run(args, env=env, capture_output=True, timeout=300).returncode == 0
    write_jpegs(tmp_path / "in" / "later", 20, seed=30, height=8, width=8)  # what the resume has to do
    resume = subprocess.Popen(
        [*args, "--mode", "resume", "-v"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for line in piped(resume.stderr):
            if "resume: 20 inputs still to label" in line:  # counted; the pipeline's walk is still to come
                write_jpegs(tmp_path / "in" / "early", 10, seed=31, height=8, width=8)  # ranks before the rest
                break
        out, err = resume.communicate(timeout=300)
    finally:
        kill_session(resume.pid)
    assert resume.returncode == 0 and "complete: every input has exactly one row" in out, err[-3000:]
    assert "named an input listed before" not in err
    paths = pq.read_table(tmp_path / "out").column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 70
