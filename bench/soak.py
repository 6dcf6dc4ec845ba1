"""A soak: one job killed (SIGKILL, SIGTERM or SIGINT, the driver alone or its whole session)
at random moments and resumed each time, until it completes; then every input exactly once.

    python bench/soak.py --images 20000 --kills 5
    python bench/soak.py --images 100000 --kills 5 --seed 3

The null model on tiny JPEGs (hard links to a few), small part files, `--checkpoint-every 1`:
many parts, fencing and repairs exercised at every kill. Prints, per run, the signal, the
rows on disk when it ended and the exit status; at the end the rows, distinct paths and
inputs, which must be equal, and the driver's peak RSS of the last run (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = {"SIGKILL (driver)": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


def tiny_collection(folder: Path, n: int) -> None:
    from PIL import Image

    if folder.exists() and len(os.listdir(folder)) >= n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    originals = []
    for i in range(8):
        path = folder / f"original-{i}.jpg"
        Image.new("RGB", (16, 16), (30 * i, 255 - 30 * i, 90)).save(path)
        originals.append(path)
    for i in range(n - len(originals)):
        link = folder / f"img-{i:07d}.jpg"
        if not link.exists():
            os.link(originals[i % len(originals)], link)


def rows_on_disk(out: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in out.glob("part-*.parquet")) if out.exists() else 0


def kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/resnet-batch-soak"))
    args = p.parse_args()
    rng = random.Random(args.seed)
    images, out = args.workdir / "in", args.workdir / "out"
    tiny_collection(images, args.images)
    job = [sys.executable, "-m", "resnet_batch", "label", str(images), "--output", str(out), "--model", "none"]
    job += ["--batch-size", "64", "--rows-per-file", "500", "--checkpoint-every", "1", "--progress-every", "600"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    mode, kills = "overwrite", 0
    while True:
        started = time.monotonic()
        run = subprocess.Popen(
            [*job, "--mode", mode],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        what = "none"
        if kills < args.kills:
            target = rows_on_disk(out) + rng.randint(500, max(1000, args.images // (args.kills + 1)))
            while run.poll() is None and rows_on_disk(out) < target:
                time.sleep(0.2)
            if run.poll() is None:
                what = rng.choice(list(SIGNALS))
                os.kill(run.pid, SIGNALS[what])
                kills += 1
        stdout, stderr = run.communicate(timeout=3600)  # what a killed driver's Ray left: the resume ends it
        print(
            f"run: {what:17} exit {run.returncode:4}  rows on disk {rows_on_disk(out):8}  "
            f"{time.monotonic() - started:6.1f} s",
            flush=True,
        )
        mode = "resume"
        if what == "none":
            break
    paths = [
        p for part in out.glob("part-*.parquet") for p in pq.read_table(part, columns=["path"])["path"].to_pylist()
    ]
    kill_session(run.pid)
    verdict = "exactly once" if len(paths) == len(set(paths)) == args.images else "NOT exactly once"
    print(f"\n{kills} kills; rows {len(paths)}, distinct {len(set(paths))}, inputs {args.images}: {verdict}")
    print(stdout.strip().splitlines()[-1] if stdout.strip() else stderr[-500:])


if __name__ == "__main__":
    main()
