"""What a person sees while a job runs: a bar that moves by batches, in a real terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios

import pytest

from .conftest import write_jpegs
from .helpers import RESNET_BATCH, found

pytestmark = pytest.mark.e2e  # runs the command, or Ray, in processes of its own


FRAME = re.compile(
    r"(?P<phase>[a-z][^\r\n:|]*): +\d+%\|[^|]*\| (?P<done>\d+)/(?P<total>\d+)\+? "
    r"\[(?P<clock>[\d:]+)<(?P<eta>[\d:]+|\?), (?P<rate>[\d.]+|\?) img/s\] "
    r"(?P<errors>\d+) errors?, (?P<saved>\d+) saved"
)


def _seconds(clock: str) -> int:
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def test_the_bar_moves_by_batches(tmp_path):
    folder = tmp_path / "in"
    write_jpegs(folder, 200, seed=71, height=80, width=100)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal's size
    job = subprocess.Popen(
        [
            *RESNET_BATCH,
            "label",
            str(folder),
            "--output",
            str(tmp_path / "out"),
            "--model",
            "resnet18",
            "--weights",
            "none",
            "--precision",
            "auto",
            "--batch-size",
            "16",
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    screen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the job closed its end
                break
            if not chunk:
                break
            screen += chunk
        elif job.poll() is not None:
            break
    os.close(master)
    assert job.wait(timeout=60) == 0, screen.decode(errors="replace")[-2000:]
    text = screen.decode(errors="replace")
    frames = [m.groupdict() for m in FRAME.finditer(text)]
    assert frames, text[-2000:]
    counts = {int(f["done"]) for f in frames if f["total"] == "200" and f["done"] != "0"}
    # Blocks hold 4 batches (64 rows): moving by blocks would show at most 64, 128, 192, 200.
    assert len(counts) >= 6 and max(counts) == 200, sorted(counts)
    phases = [f["phase"] for f in frames]
    assert phases[0] in ("starting", "checking the output"), phases[:3]
    assert "labeling" in phases and any(
        re.fullmatch(r"starting \d+ model actors? \(\d/\d ready\)", p) for p in phases
    ), set(phases)

    # The clock runs from the command's launch and moves every second, whatever the phase.
    clocks = [_seconds(f["clock"]) for f in frames]
    assert clocks == sorted(clocks), "the clock never goes back"
    # (From the first frame on: when that comes depends on how fast the interpreter starts.)
    assert set(range(clocks[0], max(clocks) + 1)) <= set(clocks), "no second without a frame: the clock never freezes"

    # No rate or ETA until the steady phase has lasted a while; then the rate is one the job
    # could have had (never more than the rows it had done over the time since its first rows).
    first_rows_at = min(_seconds(f["clock"]) for f in frames if f["done"] != "0")
    for f in frames:
        if f["rate"] != "?":
            assert float(f["rate"]) <= 2 * int(f["done"]) / max(_seconds(f["clock"]) - first_rows_at, 1), f
        if _seconds(f["clock"]) < first_rows_at + 4:
            assert f["rate"] == "?" and f["eta"] == "?", f

    # The last frame agrees with the summary below it.
    summary_errors = found(r"errors: (?:decode_error )?(\d+|none)", text).group(1)
    assert frames[-1]["errors"] == ("0" if summary_errors == "none" else summary_errors)
    assert frames[-1]["saved"] == "200" and frames[-1]["done"] == "200"
    assert "complete: every input has exactly one row" in text

    # The metadata says what ran: "auto" as the model actor resolved it, and the versions.
    import json

    import pyarrow.parquet as pq
    import ray
    import torch

    from resnet_batch.model.settings import resolve_precision

    ran = resolve_precision("auto", "cpu")
    record = json.loads((tmp_path / "out" / "_resnet_batch.json").read_text())
    assert record["precision"] == ran and record["device"] == "cpu"
    assert record["ran"] == [
        {
            "device": "cpu",
            "gpu": None,
            "precision": ran,
            "torch": torch.__version__,
            "torchvision": record["versions"]["torchvision"],
        }
    ]
    assert record["versions"]["ray"] == ray.__version__
    footers = {pq.read_schema(p).metadata[b"resnet_batch.precision"] for p in (tmp_path / "out").glob("part-*")}
    assert footers == {ran.encode()}


def test_what_a_starved_job_waits_for():
    from resnet_batch.run.progress.resources import short_of

    assert short_of({"CPU": 1}, {"CPU": 0}, 1, 0) == (
        "waiting for 1 CPU for the decode tasks; the cluster has CPU 0 free of 1, 1 held by model actors"
    )
    assert short_of({"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 0}, 0, 1) == (
        "waiting for 1 GPU for a model actor; the cluster has GPU 0 free of 1"
    )
    assert short_of({"CPU": 8}, {"CPU": 3}, 1, 0) is None
    # An actor still starting holds its CPU, and decode tasks hold the rest: nobody is waiting.
    assert short_of({"CPU": 2}, {"CPU": 0}, 1, 0) is None
    assert short_of({"CPU": 2}, {"CPU": 0}, 0, 0) == (
        "waiting for 1 CPU for a model actor; the cluster has CPU 0 free of 2"
    )
    # The null model's actors hold no CPU: they never wait for one, and hold none from decoding;
    # with no CPU left in the cluster (its worker hosts lost), decoding waits, placed or not.
    assert short_of({"CPU": 2}, {"CPU": 0}, 0, 0, cpus=0) is None
    assert short_of({"CPU": 0}, {"CPU": 0}, 0, 0, cpus=0) == (
        "waiting for 1 CPU for the decode tasks; the cluster has CPU 0 free of 0"
    )
    assert short_of({"CPU": 0}, {"CPU": 0}, 1, 0, cpus=0) == (
        "waiting for 1 CPU for the decode tasks; the cluster has CPU 0 free of 0"
    )
