"""What a person sees while a job runs: a bar that moves by batches, in a real terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

from .conftest import write_jpegs


def test_the_bar_moves_by_batches(tmp_path):
    folder = tmp_path / "in"
    write_jpegs(folder, 200, seed=71, height=80, width=100)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal's size
    job = subprocess.Popen([sys.executable, "-m", "resnet_batch.cli", "label", str(folder), "--output",
                            str(tmp_path / "out"), "--model", "resnet18", "--weights", "none", "--precision", "fp32",
                            "--batch-size", "16"], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
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
    counts = {int(n) for n, total in re.findall(r"\| *(\d+)/(\d+) \[", text) if total == "200" and n != "0"}
    # Blocks hold 4 batches (64 rows): moving by blocks would show at most 64, 128, 192, 200.
    assert len(counts) >= 6 and max(counts) == 200, sorted(counts)
    phases = set(re.findall(r"(starting \d+ model actors? \(\d/\d ready\)|labeling|first batch)", text))
    assert "labeling" in phases and any(p.startswith("starting") for p in phases), phases
    assert "ETA" not in text or re.search(r"\d+img/s", text)
    assert "complete: every input has exactly one row" in text
