"""Hostile and careless input, through the command line, as a user meets it.

One job over a folder and a manifest that hold every kind of input the rules in
ARCHITECTURE.md ("Input identity", "File kinds") name; then the tools over its output;
then the refusals that need no Ray (config files, `--`, memory:// outputs, labels).
Commands run through main() in this process, jobs on the suite's Ray; in processes of
their own where the process is what a test is about: its own Ray, signals, its arguments.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
from PIL import Image

from .conftest import write_jpegs
from .helpers import RESNET_BATCH, cli, in_process, kill_session, piped, session_processes
from .inputs_catalogue import bomb_png

pytestmark = pytest.mark.e2e  # runs the command, or Ray, in processes of its own


JOB = ["--model", "resnet18", "--weights", "none", "--precision", "fp32", "--batch-size", "8"]
# Where what a row holds is not what a test checks: the null model runs the whole pipeline
# (listing, decoding, the actor pool, saving) without a network, or torch in its actor.
PIPELINE_JOB = ["--model", "none", "--precision", "fp32", "--batch-size", "8"]
LATIN1_NAME = b"caf\xe9.jpg"  # a file name that is not UTF-8


def one_line_error(result: subprocess.CompletedProcess, needle: str) -> str:
    """Exit 2 and one error line (after any progress lines), never a traceback."""
    lines = [line for line in result.stderr.strip().splitlines() if not line[:2].isdigit()]  # not "12:00:01 export: .."
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], (result.returncode, result.stderr)
    return lines[0]


def rows(out: Path) -> pa.Table:
    return pq.read_table(out)


def _jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "gray").save(buf, format="JPEG")
    return buf.getvalue()


def _tar(path: Path, members: dict[str, bytes] | list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items() if isinstance(members, dict) else members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, ray_local):
    """The inputs, the paths each must produce exactly once, and the labeled output."""
    root = tmp_path_factory.mktemp("hostile")
    folder, elsewhere, loose = root / "in", root / "elsewhere", root / "loose"
    photos = write_jpegs(folder, 3, seed=11)
    linked = write_jpegs(elsewhere, 2, seed=12)
    extra = write_jpegs(loose, 2, seed=13)
    os.symlink(elsewhere, folder / "linked")  # a symlinked sub-folder is walked
    os.symlink(folder, folder / "loop")  # a link back to its own folder is not (endless)
    (folder / ".hidden.jpg").write_bytes(photos[0].read_bytes())  # left out, and counted
    os.mkfifo(folder / "pipe.jpg")  # would block a reader forever
    with socket.socket(socket.AF_UNIX) as listening:  # cannot be opened at all
        listening.bind(str(folder / "sock.jpg"))
    raw = os.path.join(os.fsencode(folder), LATIN1_NAME)
    with open(raw, "wb") as f:
        f.write(photos[1].read_bytes())
    (folder / "caf\\xe9.jpg").write_bytes(photos[2].read_bytes())  # literally a backslash, x, e, 9: its own input
    latin_folder = os.path.join(os.fsencode(folder), b"fa\xe7ade")  # a folder name that is not UTF-8
    os.mkdir(latin_folder)
    with open(os.path.join(latin_folder, b"x.jpg"), "wb") as f:
        f.write(photos[0].read_bytes())
    (folder / "huge.png").write_bytes(bomb_png(10_000, 9_500))  # 95M pixels: under the default 100M limit
    Image.new("RGB", (100_000, 1), "white").save(folder / "strip.png")  # 100k pixels; resized: 25.6M x 256
    jpeg = photos[2].read_bytes()
    (root / "escape.jpg").write_bytes(b"never labeled: outside the shard")
    _tar(folder / "shard.tar", {"a.jpg": jpeg, "sub/b.jpg": jpeg, "../escape.jpg": jpeg})
    small, large = _jpeg(40, 30), _jpeg(80, 60)
    _tar(
        folder / "dups.tar",
        [
            ("a.jpg", small),
            ("a.jpg", large),
            ("./c.jpg", small),
            ("c.jpg", large),
            ("d//e.jpg", large),
            ("d/e.jpg", small),
        ],
    )
    _tar(folder / "cut.tar", {"one.jpg": jpeg, "two.jpg": jpeg, "three.jpg": jpeg})
    whole = (folder / "cut.tar").read_bytes()
    (folder / "cut.tar").write_bytes(whole[: whole.index(b"three.jpg") + 600])  # inside the third member's data
    with tarfile.open(folder / "packed.tar.gz", "w:gz") as packed:
        packed.add(photos[0], arcname="p.jpg")

    # A Latin-1 manifest: a path twice, one file spelled four ways, and the non-UTF-8 name.
    manifest = root / "list.txt"
    lines = [
        str(extra[0]).encode(),
        str(extra[0]).encode(),
        str(extra[1]).encode(),
        str(loose).encode() + b"/./" + extra[1].name.encode(),
        str(loose).encode() + b"//" + extra[1].name.encode(),
        b"file://" + str(extra[1]).encode(),
        raw,
    ]
    manifest.write_bytes(b"\n".join(lines) + b"\n")

    escaped = str(folder) + "/caf\\xe9.jpg"
    shard = str(folder / "shard.tar")
    expected = (
        {str(p) for p in photos}
        | {str(folder / "linked" / p.name) for p in linked}
        | {
            str(folder / "pipe.jpg"),
            str(folder / "sock.jpg"),
            escaped,
            str(folder / "huge.png"),
            str(folder / "strip.png"),
            f"{shard}/a.jpg",
            f"{shard}/sub/b.jpg",
            f"{shard}/../escape.jpg",
            str(extra[0]),
            str(extra[1]),
            str(folder) + "/fa\\xe7ade/x.jpg",
            *(f"{folder}/dups.tar/{m}" for m in ("a.jpg", "c.jpg", "d/e.jpg")),
            str(folder / "packed.tar.gz"),
            *(f"{folder}/cut.tar/{m}" for m in ("one.jpg", "two.jpg", "three.jpg")),
            str(folder / "cut.tar"),
            str(folder) + "/caf\\\\xe9.jpg",
        }
    )
    out = root / "out"
    result = in_process("label", str(folder), str(manifest), "--output", str(out), *JOB)
    return folder, expected, out, result


def test_every_input_exactly_once(hostile):
    folder, expected, out, result = hostile
    assert result.returncode == 0, result.stderr
    assert "complete: every input has exactly one row" in result.stdout
    table = rows(out)
    paths = table.column("path").to_pylist()
    assert sorted(paths) == sorted(expected), "each distinct input once, none lost, none twice"
    errors = dict(zip(paths, table.column("error").to_pylist(), strict=False))
    assert errors[str(folder / "pipe.jpg")].startswith("not_a_file: a FIFO")
    assert errors[str(folder / "sock.jpg")].startswith("not_a_file: a socket")
    assert errors[str(folder) + "/caf\\xe9.jpg"] is None, "a non-UTF-8 name is labeled, not just listed"
    assert errors[str(folder) + "/fa\\xe7ade/x.jpg"] is None, "and so is what a non-UTF-8 folder holds"
    assert errors[str(folder) + "/caf\\\\xe9.jpg"] is None, "a name spelled like an escape is an input of its own"
    assert (
        table.filter(pa.compute.equal(table["path"], str(folder) + "/caf\\xe9.jpg"))["embedding"][0]
        != table.filter(pa.compute.equal(table["path"], str(folder) + "/caf\\\\xe9.jpg"))["embedding"][0]
    ), "each row describes its own file's bytes"
    assert errors[f"{folder / 'shard.tar'}/../escape.jpg"].startswith("unsafe_member")
    sizes = dict(
        zip(
            paths,
            zip(table.column("width").to_pylist(), table.column("height").to_pylist(), strict=False),
            strict=False,
        )
    )
    # One member name, one input: the last member of a name, as `tar -x` leaves it.
    assert [sizes[f"{folder}/dups.tar/{m}"] for m in ("a.jpg", "c.jpg", "d/e.jpg")] == [(80, 60), (80, 60), (40, 30)]
    assert (
        errors[str(folder / "packed.tar.gz")].startswith("list_failed: cannot read tar shard")
        and "gzip-compressed" in errors[str(folder / "packed.tar.gz")]
    )
    # A shard cut short: what precedes the break is labeled, and the shard's own row says where it broke.
    assert errors[f"{folder}/cut.tar/one.jpg"] is None and errors[f"{folder}/cut.tar/two.jpg"] is None
    assert errors[f"{folder}/cut.tar/three.jpg"].startswith("decode_error")
    assert errors[str(folder / "cut.tar")].startswith("list_failed: cannot read tar shard")
    assert errors[f"{folder / 'shard.tar'}/a.jpg"] is None
    assert not (errors[str(folder / "huge.png")] or "").startswith("too_large"), "95M pixels is under --max-pixels"
    assert (
        errors[str(folder / "strip.png")]
        == "too_large: 100000x1 resizes to 25600000x256 pixels, over the limit of 100000000"
    )
    assert "not inputs: 1 hidden entries" in result.stdout


def test_pixel_limit_is_max_pixels_alone():
    """Pillow's own limit (an error from 179M pixels) does not decide: --max-pixels does, in
    both directions (the job above labels a 95M-pixel image, which Pillow would warn about)."""
    from resnet_batch.data.decode import ImageError, decode_rgb

    with pytest.raises(ImageError, match="too_large: 15000x13000 pixels exceeds the limit of 150000000"):
        decode_rgb(bomb_png(15_000, 13_000), max_pixels=150_000_000)
    with pytest.raises(ImageError, match="too_large: 15000x13000 pixels exceeds the limit of 190000000"):
        decode_rgb(bomb_png(15_000, 13_000), max_pixels=190_000_000)


def test_absurd_resize_is_refused_up_front(tmp_path):
    write_jpegs(tmp_path / "in", 1, seed=1)
    for resize in ("100000", "8"):
        result = in_process(
            "label", str(tmp_path / "in"), "--output", str(tmp_path / "out"), *JOB, "--crop", "none", "--resize", resize
        )
        one_line_error(
            result,
            f"--resize must be between 32 (the coarsest stride) and 7071 (images up to 7071x14142 "
            f"pixels, within --max-pixels 100000000), got {resize}",
        )


def test_imagefolder_exports_stay_in_their_shard(hostile, tmp_path):
    folder, expected, out, _ = hostile
    member = folder / "shard.tar"
    with tarfile.open(member) as tar:
        a_bytes = piped(tar.extractfile("a.jpg")).read()
    for copy in (False, True):
        target = tmp_path / f"export-{copy}"
        result = in_process(
            "export", str(out), "--format", "imagefolder", "--output", str(target), *(["--copy"] if copy else [])
        )
        assert result.returncode == 0, result.stderr
        files = [p for p in target.rglob("*") if not p.is_dir()]
        assert files and all(p.exists() for p in files), "no dangling link"
        by_hash = {p.name.split("_", 1)[0]: p for p in files}
        exported = {
            path: by_hash[hashlib.sha1(path.encode()).hexdigest()[:8]]
            for path in expected
            if hashlib.sha1(path.encode()).hexdigest()[:8] in by_hash
        }
        a_member = exported[f"{member}/a.jpg"]
        assert a_member.read_bytes() == a_bytes and not a_member.is_symlink()
        with tarfile.open(folder / "dups.tar") as tar:  # the bytes labeled: the last member named a.jpg
            assert exported[f"{folder}/dups.tar/a.jpg"].read_bytes() == piped(tar.extractfile("a.jpg")).read()
        assert not any(p.endswith("escape.jpg") for p in exported), "a member that leaves its shard is never exported"
        assert all(b"never labeled" not in p.read_bytes() for p in files)

    result = in_process(
        "export", str(out), "--format", "label-studio", "--output", str(tmp_path / "ls.json"), "--local-files-root", "/"
    )
    one_line_error(result, "member of a tar shard, which Label Studio cannot serve")


def test_tool_outputs_never_land_inside_a_job_output(hostile, tmp_path):
    _, _, out, _ = hostile
    before = sorted(os.listdir(out))
    one_line_error(in_process("neighbors", str(out), "--output", str(out)), "lies inside the job output")
    one_line_error(
        in_process("export", str(out), "--format", "csv", "--output", str(out / "x.csv")), "lies inside the job output"
    )
    one_line_error(in_process("report", str(out), "--html", str(out / "r.html")), "lies inside the job output")
    one_line_error(in_process("report", str(out), "--html", str(tmp_path)), "is a folder")
    one_line_error(
        in_process("label", str(tmp_path), "--output", str(out / "nested"), *JOB), "lies inside the job output"
    )
    assert sorted(os.listdir(out)) == before


def test_resume_refuses_other_settings_without_the_run_record(hostile, tmp_path):
    _, _, out, _ = hostile
    copy = tmp_path / "out"
    copy.mkdir()
    for part in out.glob("part-*.parquet"):
        (copy / part.name).write_bytes(part.read_bytes())  # the run record is lost
    folder = hostile[0]
    result = in_process(
        "label",
        str(folder / "shard.tar"),
        "--output",
        str(copy),
        "--model",
        "resnet34",
        "--weights",
        "none",
        "--mode",
        "resume",
    )
    one_line_error(result, "cannot resume")
    assert "--model was resnet18, now resnet34 (in part-" in result.stderr


def test_foreign_parquet_is_neither_deleted_nor_resumed_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    spark = out / "part-00000-1b2c3d.snappy.parquet"
    pq.write_table(pa.table({"id": [1, 2]}), spark)
    for mode in ("overwrite", "resume", "error"):  # error: no advice to use a mode that refuses too
        result = in_process("label", str(tmp_path / "none.jpg"), "--output", str(out), *JOB, "--mode", mode)
        one_line_error(result, "Parquet files resnet-batch did not write (e.g. part-00000-1b2c3d.snappy.parquet)")
    assert spark.exists()
    spark.unlink()
    (out / "year=2024").mkdir()
    pq.write_table(pa.table({"id": [3]}), out / "year=2024" / "data.parquet")  # a reader would read it too
    for mode in ("overwrite", "resume"):
        result = in_process("label", str(tmp_path / "none.jpg"), "--output", str(out), *JOB, "--mode", mode)
        one_line_error(result, "Parquet files resnet-batch did not write (e.g. year=2024/data.parquet)")


def test_names_that_mean_something_elsewhere(tmp_path, ray_local):
    """&, #, %, + in file names; names near the length limit; class names that are
    spreadsheet formulas or too long for a folder name."""
    folder = tmp_path / "in"
    photos = write_jpegs(folder, 3, seed=21)
    names = ["a&b #1 100%+.jpg", "=cmd.jpg", "n" * 240 + ".jpg"]
    for photo, name in zip(photos, names, strict=False):
        photo.rename(folder / name)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"={'x' * 300}{i}" for i in range(1000)) + "\n")
    out = tmp_path / "out"
    result = in_process("label", str(folder), "--output", str(out), *JOB, "--labels", str(labels), "--top-k", "2")
    assert result.returncode == 0, result.stderr

    ls = tmp_path / "ls.json"
    assert in_process("export", str(out), "--format", "label-studio", "--output", str(ls)).returncode == 0
    from urllib.parse import parse_qs, urlsplit

    refs = {parse_qs(urlsplit(t["data"]["image"]).query)["d"][0] for t in json.loads(ls.read_text())}
    assert refs == {str(folder / n).lstrip("/") for n in names}, "each ?d= names its own file"

    target = tmp_path / "folders"
    result = in_process("export", str(out), "--format", "imagefolder", "--output", str(target))
    assert result.returncode == 0, result.stderr
    links = [p for p in target.rglob("*") if p.is_symlink()]
    assert len(links) == 3 and all(len(p.name.encode()) <= 255 and p.exists() for p in links)
    assert all(len(p.parent.name.encode()) <= 255 for p in links)

    csv_path = tmp_path / "x.csv"
    assert in_process("export", str(out), "--format", "csv", "--output", str(csv_path)).returncode == 0
    import csv

    cells = [c for row in list(csv.reader(csv_path.open()))[1:] for c in row]
    assert cells and not any(c[:1] in "=+-@" for c in cells if c), "no cell a spreadsheet runs as a formula"


def test_one_writer_at_a_time(tmp_path, ray_local):
    folder = tmp_path / "in"
    write_jpegs(folder, 24, seed=31)
    out = tmp_path / "out"
    args = [*RESNET_BATCH, "label", str(folder), "--output", str(out), *PIPELINE_JOB]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lease = out / "_resnet_batch.lock"
    deadline = time.time() + 60
    while not lease.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert lease.exists(), "the first job holds a lease while it runs"
    second = in_process("label", str(folder), "--output", str(out), *PIPELINE_JOB)
    one_line_error(second, "is being written by another job (pid")
    assert first.wait(timeout=240) == 0, piped(first.stderr).read()
    assert not lease.exists(), "the lease is released at the end"
    assert sorted(rows(out).column("path").to_pylist()) == sorted(str(p) for p in folder.iterdir())

    # A lease left by a job that died (SIGKILL) is taken over.
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    lease.write_text(
        json.dumps(
            {"token": "x", "host": os.uname().nodename, "pid": dead.pid, "started": time.time(), "renewed": time.time()}
        )
    )
    result = in_process("label", str(folder), "--output", str(out), *PIPELINE_JOB, "--mode", "resume")
    assert result.returncode == 0 and "already done 24" in result.stdout, result.stderr


def test_a_job_starts_its_own_ray_and_fails_fast_on_a_dead_address(tmp_path):
    """A cluster left on the machine (here one with no CPU, where a job would wait forever)
    is not joined unless asked; joined, the job says what it waits for and gives up after
    --wait-for-resources; an address that does not answer fails in seconds."""
    folder = tmp_path / "in"
    write_jpegs(folder, 2, seed=41)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RAY_AUTH_MODE": "token", "RAY_ADDRESS": ""}
    said = tmp_path / "ray-start.txt"
    # (a short --temp-dir: Ray's socket paths must fit in 107 bytes)
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--num-cpus",
            "0",
            "--port",
            str(port),
            "--block",
            "--include-dashboard",
            "false",
            "--temp-dir",
            f"/tmp/rb-head-{os.getpid()}",
        ],
        stdout=said.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while "Ray runtime started." not in said.read_text():  # `ray start`'s line once its node is up
            assert head.poll() is None and time.time() < deadline, "the Ray head did not come up"
            time.sleep(0.1)
        result = cli("label", str(folder), "--output", str(tmp_path / "out"), *PIPELINE_JOB, env=env, timeout=180)
        assert result.returncode == 0, result.stderr
        result = cli(
            "label",
            str(folder),
            "--output",
            str(tmp_path / "starved"),
            *JOB,
            "--address",
            f"127.0.0.1:{port}",
            "--wait-for-resources",
            "5",
            "--progress-every",
            "1",
            env=env,
            timeout=180,
        )
        waiting = "waiting for 1 CPU for a model actor; the cluster has CPU 0 free of 0"
        lines = result.stderr.strip().splitlines()
        assert (
            result.returncode == 2 and waiting in lines[-1] and "gave up after 5 s (--wait-for-resources)" in lines[-1]
        )
        assert any(line.split(" ", 1)[-1].startswith(waiting) for line in lines[:-1]), "the progress line says it"
        assert "Traceback" not in result.stderr
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    started = time.time()
    result = cli("label", str(folder), "--output", str(tmp_path / "out2"), *JOB, "--address", "127.0.0.1:9")
    one_line_error(result, "no Ray cluster answers at 127.0.0.1:9")
    assert time.time() - started < 60


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_ray_starts(tmp_path, signum):
    folder = tmp_path / "in"
    write_jpegs(folder, 2, seed=51)
    job = subprocess.Popen(
        [
            *RESNET_BATCH,
            "label",
            str(folder),
            "--output",
            str(tmp_path / "out"),
            *JOB,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_ADDRESS": ""},
        start_new_session=True,
    )
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "resnet-batch" / "logs"
    deadline = time.time() + 60
    # A process of its session beside the job's own: Ray's start is under way.
    while not [line for line in session_processes(job.pid) if line.split()[1] != str(job.pid)]:
        assert job.poll() is None and time.time() < deadline, "the job ended before its Ray started"
        time.sleep(0.05)
    job.send_signal(signum)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err
    deadline = time.time() + 20  # Ray's processes (its session's, workers Ray renamed included) end
    while (left := session_processes(job.pid)) and time.time() < deadline:
        time.sleep(0.2)
    if left:  # clean up before failing
        kill_session(job.pid)
    assert not left, f"Ray processes of the job left behind: {left}"
    assert log_dir.exists()


def test_refusals_before_any_work(tmp_path):
    # Inputs after `--` are inputs (not dropped): a missing one is named.
    one_line_error(
        in_process("label", "--output", str(tmp_path / "o"), *JOB, "--", str(tmp_path / "nope.jpg") + "x"),
        "does not exist",
    )
    # memory:// is gone when the command exits.
    one_line_error(
        in_process("label", str(tmp_path), "--output", "memory://out", *JOB), "memory:// lives only in this process"
    )
    # Config files: ~ expanded, a quoted "false" is false, wrong types and folders are one line.
    home = tmp_path / "home"
    (home / "taken").mkdir(parents=True)
    (home / "taken" / "x.txt").write_text("x")
    config = tmp_path / "job.yaml"
    config.write_text(f"inputs: [{tmp_path}]\noutput: ~/taken\nmodel: resnet18\nweights: none\ncompile: 'false'\n")
    one_line_error(
        in_process("label", "--config", str(config), env={"HOME": str(home)}), f"--output {home}/taken already holds"
    )
    for text, needle in [
        ("inputs: 5\noutput: o\n", "config key 'inputs' must be a string or a list of strings"),
        ("inputs: [x]\noutput: o\nmodel: [resnet18]\n", "config key 'model' must be a string"),
        ("inputs: [x]\noutput: o\ncompile: maybe\n", "config key 'compile' must be true or false"),
    ]:
        config.write_text(text)
        one_line_error(in_process("label", "--config", str(config)), needle)
    one_line_error(in_process("label", "--config", str(tmp_path)), "cannot read config file")
    # A class name that is null is not the label "None".
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["cat", None] + [f"c{i}" for i in range(998)]))
    line = one_line_error(
        in_process("label", str(tmp_path), "--output", str(tmp_path / "o"), *JOB, "--labels", str(labels)),
        "class 1 has no name (got null)",
    )
    assert "not valid JSON" not in line, "valid JSON with a null in it is a missing name, not bad JSON"


def test_disk_full_is_one_line_naming_it(tmp_path, ray_local):
    """The write task's own OSError, not Ray's traceback around it (a tmpfs of 12 KB: the
    run record fits, the first part file does not)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(disk)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        folder = tmp_path / "in"
        write_jpegs(folder, 6, seed=61)
        result = in_process("label", str(folder), "--output", str(disk / "out"), *JOB)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    lines = [line for line in result.stderr.strip().splitlines() if not line[:2].isdigit()]  # not progress lines
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "No space left on device" in lines[0] and "(logs: " in lines[0] and "Traceback" not in lines[0]
    assert "the output holds 0 rows; once there is room" in lines[0] and "--mode resume" in lines[0], lines[0]


def test_non_utf8_arguments_and_blank_manifest_entries(tmp_path):
    """A Latin-1 folder and --output given as arguments (Ray records the command line as
    UTF-8); blank entries in CSV and Parquet manifests are no input, as a .txt's blank lines."""
    folder = tmp_path / os.fsdecode(b"d\xe9j\xe0")
    photos = write_jpegs(folder, 2, seed=5)
    listed = write_jpegs(tmp_path / "listed", 3, seed=6)
    (tmp_path / "list.csv").write_text(f"path,split\n{listed[0]},a\n,b\n  ,c\n")
    pq.write_table(
        pa.table({"path": [str(listed[1]), None, "", str(listed[2])], "split": ["d", "e", "f", "g"]}),
        tmp_path / "list.parquet",
    )
    out = tmp_path / os.fsdecode(b"sortie\xe9")
    result = cli(
        "label",
        str(folder),
        str(tmp_path / "list.csv"),
        str(tmp_path / "list.parquet"),
        "--output",
        str(out),
        *PIPELINE_JOB,
    )
    assert result.returncode == 0, result.stderr
    table = pa.concat_tables(pq.read_table(open(part, "rb")) for part in out.glob("part-*.parquet"))  # a str path
    by_path = dict(zip(table.column("path").to_pylist(), table.column("split").to_pylist(), strict=False))
    assert by_path == {f"{tmp_path}/d\\xe9j\\xe0/{p.name}": None for p in photos} | {
        str(listed[0]): "a",
        str(listed[1]): "d",
        str(listed[2]): "g",
    }


def test_resume_deletes_only_its_own_and_repairs_what_it_can(tmp_path, ray_local):
    """Resume deletes only the temporary files it names, keeps the provenance earlier runs
    recorded, reads past a damaged run record, and relabels the rows of a truncated part."""
    photos = write_jpegs(tmp_path / "in", 6, seed=8)
    out = tmp_path / "out"
    label = ["label", str(tmp_path / "in"), "--output", str(out), *JOB, "--rows-per-file", "2"]
    assert in_process(*label).returncode == 0
    record = json.loads((out / "_resnet_batch.json").read_text())
    assert {"ran", "device", "versions"} <= set(record) and record["precision"] == "fp32"
    (out / "_tmp-precious.txt").write_text("mine")
    (out / "_tmp-x.parquet").write_text("mine too")

    nothing_to_do = in_process(*label[:-2], "--mode", "resume")
    assert nothing_to_do.returncode == 0, nothing_to_do.stderr
    assert (out / "_tmp-precious.txt").exists() and (out / "_tmp-x.parquet").exists()
    again = json.loads((out / "_resnet_batch.json").read_text())
    assert again.pop("finished")["at"] > record.pop("finished")["at"], "the run record says when this run ended"
    assert again.pop("runs")[:-1] == record.pop("runs"), "each run of the output, the earlier ones as they were"
    assert again == record, "provenance is never lost"

    parts = sorted(out.glob("part-*.parquet"))
    truncated = parts[0].read_bytes()[:-100]
    parts[0].write_bytes(truncated)
    said = []
    for damaged in ('{"model": 5}', "[1]", "{not json"):
        (out / "_resnet_batch.json").write_text(damaged)
        result = in_process(*label[:-2], "--mode", "resume")
        assert result.returncode == 0, result.stderr
        assert "complete: every input has exactly one row" in result.stdout
        said.append(result.stderr)
    assert f"{parts[0]} is damaged" in said[0] and "its rows are labeled again" in said[0]
    assert "_resnet_batch.json is damaged (a JSON list, not an object)" in said[1]
    assert "_resnet_batch.json is damaged (Expecting property name" in said[2]
    assert (out / f"_damaged-{parts[0].name}").read_bytes() == truncated
    paths = rows(out).column("path").to_pylist()
    assert sorted(paths) == sorted(str(p) for p in photos)
    assert "ran" in json.loads((out / "_resnet_batch.json").read_text())


def test_readers_say_when_an_output_is_not_a_finished_runs(tmp_path, ray_local):
    """A copied part file is named by the job's summary and by the readers; an output whose
    run is still going, died, or was stopped is said to be partial; a path that does not
    exist says so; INPUTs without an image end with a warning, not "complete"."""
    write_jpegs(tmp_path / "in", 4, seed=9)
    (tmp_path / "in" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    label = ["label", str(tmp_path / "in"), "--output", str(out), *PIPELINE_JOB]
    assert in_process(*label).returncode == 0
    record = json.loads((out / "_resnet_batch.json").read_text())
    assert record["finished"]["complete"] is True and record["finished"]["inputs"] == 5
    again = in_process(*label, "--mode", "resume")  # nothing left: the errors are those of the rows done before
    assert "errors: none in this run; decode_error 1 among the 5 rows done before" in again.stdout, again.stdout

    def report_warnings() -> str:
        result = in_process("report", str(out), "--html", str(tmp_path / "r.html"))
        assert result.returncode == 0, result.stderr
        return "\n".join(line for line in result.stderr.splitlines() if "WARNING" in line)

    assert report_warnings() == "", "a finished run's output reads without a warning"
    one_line_error(
        in_process(
            "export", str(out), "--format", "label-studio", "--output", str(tmp_path / "t.json"), "--rows", "review"
        ),
        "--rows review needs a needs_review column",
    )
    part = next(out.glob("part-*.parquet"))
    copy = out / f"{part.stem} (1).parquet"
    copy.write_bytes(part.read_bytes())
    assert copy.name in report_warnings()
    resumed = in_process(*label, "--mode", "resume")  # keeps the part named as ours, sets the copy aside
    assert resumed.returncode == 0 and "held 5 rows beyond the first for 5 inputs" in resumed.stderr
    assert "complete: every input has exactly one row" in resumed.stdout, resumed.stdout
    assert not copy.exists() and (out / f"_repeats-{copy.name}").exists() and part.exists()
    assert report_warnings() == ""

    record = json.loads((out / "_resnet_batch.json").read_text())
    del record["finished"]
    (out / "_resnet_batch.json").write_text(json.dumps(record))
    assert "was stopped before it finished" in report_warnings()
    (out / "_resnet_batch.lock").write_text(
        json.dumps(
            {
                "token": "a" * 32,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": time.time(),
                "renewed": time.time(),
            }
        )
    )
    assert "a job is writing" in report_warnings()
    (out / "_resnet_batch.lock").write_text(
        json.dumps({"token": "b" * 32, "host": socket.gethostname(), "pid": 2**22 + 1, "started": 0, "renewed": 0})
    )
    assert "died before it finished" in report_warnings()

    missing = in_process("report", str(tmp_path / "nowhere"), "--html", str(tmp_path / "r.html"))
    one_line_error(missing, f"{tmp_path / 'nowhere'} does not exist")

    (tmp_path / "empty").mkdir()
    empty = in_process("label", str(tmp_path / "empty"), "--output", str(tmp_path / "o2"), *PIPELINE_JOB)
    assert empty.returncode == 0 and "WARNING: no inputs" in empty.stdout and "complete" not in empty.stdout


def test_memory_is_bounded_before_it_is_spent(tmp_path, ray_local):
    """A sparse 8 GiB file is refused by its size, unread; a 16-bit image by its bytes per
    sample; a batch or a --resize no model actor can hold is refused up front, saying what fits."""
    folder = tmp_path / "in"
    write_jpegs(folder, 2, seed=12)
    with open(folder / "big.jpg", "wb") as f:
        f.truncate(8 * 2**30)
    Image.fromarray(np.zeros((3000, 3000), np.uint16)).save(folder / "deep.png")  # 9M pixels, 16-bit
    out = tmp_path / "out"
    result = in_process("label", str(folder), "--output", str(out), *JOB, "--max-pixels", "10000000")
    assert result.returncode == 0 and "complete: every input has exactly one row" in result.stdout, result.stderr
    errors = dict(zip(rows(out).column("path").to_pylist(), rows(out).column("error").to_pylist(), strict=True))
    assert errors[str(folder / "big.jpg")] == (
        "too_large: the file holds 8589934592 bytes than --max-bytes 536870912 allows"
    )
    assert errors[str(folder / "deep.png")] == (
        "too_large: 3000x3000 pixels of 16-bit samples (I;16) count as 18000000 8-bit pixels, "
        "over the limit of 10000000"
    )
    assert sum(e is None for e in errors.values()) == 2
    refused = in_process("label", str(folder), "--output", str(tmp_path / "b"), *JOB, "--batch-size", "4096")
    one_line_error(refused, "--batch-size 4096 cannot fit: ")
    assert "use --batch-size " in refused.stderr
    huge = in_process("label", str(folder), "--output", str(tmp_path / "c"), *JOB, "--crop", "none", "--resize", "7071")
    one_line_error(huge, "use a smaller --resize")
    plan = in_process("label", str(folder), "--output", str(tmp_path / "d"), *JOB, "--dry-run")
    assert plan.returncode == 0 and "memory: each model actor ~" in plan.stdout + plan.stderr, plan.stderr
