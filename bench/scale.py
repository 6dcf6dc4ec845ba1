"""How the job's own costs grow with the collection: the null model on synthetic manifests.

    python bench/scale.py                              # 1,000, 100,000 and 1,000,000 inputs
    python bench/scale.py --sizes 1000 1000000 10000000 --json scale.json

Each collection is a .txt manifest of hard links to a few small real JPEGs, in folders of
10,000. They are 256x256, the weights' resize size, so that decoding is only the JPEG
decoder and the crop (no resize) and the job's own costs show. For each size, measured from
launch, outside the process (the driver's peak RSS is its VmHWM, read until it exits):
- `label --model none` (the null model: no network, rows with resnet50's columns of zeros,
  here with one label and no embedding, so that rows stay small): wall, time to the first batch,
  the steady rows/s, the final exactly-once check (the summary's own split), driver peak RSS;
- `label --mode resume` with nothing left to do: wall and driver peak RSS.
It then prints each measure's growth from one size to the next, and that growth carried on
to 100M and 1B inputs, as if it kept its pace (a straight line in log-log: a guess on
paper, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import parse_summary  # noqa: E402
from tests.helpers import found  # noqa: E402

TINY_IMAGES = 16  # distinct JPEGs; every input is a hard link to one of them
PER_FOLDER = 10_000
CHECK = re.compile(r"final check ([\d.]+)s")
NULL_JOB = [
    "--model",
    "none",
    "--top-k",
    "1",
    "--no-embeddings",
    "--batch-size",
    "1024",
    "--rows-per-file",
    "200000",
    "--progress-every",
    "600",
]


def tiny_jpegs(folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(TINY_IMAGES):
        path = folder / f"tiny_{i:02d}.jpg"
        if not path.exists():
            blocks = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)  # smooth enough to stay ~3 KB
            Image.fromarray(blocks.repeat(16, axis=0).repeat(16, axis=1)).save(path, quality=80)
        paths.append(path)
    return paths


def collection(workdir: Path, size: int) -> Path:
    """A manifest of `size` inputs: hard links made once, shared by every size up to the largest."""
    manifest = workdir / f"manifest-{size}.txt"
    if manifest.exists():
        return manifest
    tiny = tiny_jpegs(workdir / "tiny")
    links = workdir / "links"
    with open(manifest, "w") as out:
        for start in range(0, size, PER_FOLDER):
            folder = links / f"{start // PER_FOLDER:06d}"
            sources = folder_sources(tiny, workdir / "sources" / folder.name)
            folder.mkdir(parents=True, exist_ok=True)
            names = []
            for i in range(start, min(size, start + PER_FOLDER)):
                path = folder / f"{i:09d}.jpg"
                if not path.exists():
                    os.link(sources[i % TINY_IMAGES], path)
                names.append(str(path))
            out.write("\n".join(names) + "\n")
    return manifest


def folder_sources(tiny: list[Path], folder: Path) -> list[Path]:
    """A folder's own copies of the tiny JPEGs: ext4 allows 65,000 links to one file."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = [folder / p.name for p in tiny]
    for source, copy in zip(tiny, copies, strict=False):
        if not copy.exists():
            shutil.copyfile(source, copy)
    return copies


def run_measured(cmd: list[str], timeout: float) -> dict:
    """Run a command; its wall time and peak RSS (MiB), with its stdout and stderr."""
    started = time.time()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    peak = [0]

    def watch():
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    hwm = next(line for line in f if line.startswith("VmHWM"))
                peak[0] = max(peak[0], int(hwm.split()[1]))
            except (OSError, StopIteration):
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate(timeout=timeout)
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-3000:]}")
    return {"wall": time.time() - started, "rss_mib": peak[0] / 1024, "stdout": out}


def measure(workdir: Path, size: int, timeout: float, rows_per_file: int = 200_000) -> dict:
    manifest = collection(workdir, size)
    out = workdir / f"out-{size}"
    label = [sys.executable, "-m", "resnet_batch", "label", str(manifest), "--output", str(out), *NULL_JOB]
    label[label.index("--rows-per-file") + 1] = str(rows_per_file)
    first = run_measured([*label, "--mode", "overwrite"], timeout)
    split = parse_summary(first["stdout"])
    result = {
        "inputs": size,
        "wall_s": first["wall"],
        "first_batch_s": split["start-up"] + split["first batch"],
        "rows_per_s": split["steady_rate"],
        "check_s": float(found(CHECK, first["stdout"]).group(1)),
        "driver_rss_mib": first["rss_mib"],
    }
    print(json.dumps(result), flush=True)  # kept should the resume fail
    resume = run_measured([*label, "--mode", "resume"], timeout)
    return {**result, "resume_s": resume["wall"], "resume_rss_mib": resume["rss_mib"]}


COLUMNS = [
    ("inputs", "{:,}"),
    ("wall_s", "{:.1f}"),
    ("first_batch_s", "{:.1f}"),
    ("rows_per_s", "{:,.0f}"),
    ("check_s", "{:.1f}"),
    ("driver_rss_mib", "{:,.0f}"),
    ("resume_s", "{:.1f}"),
    ("resume_rss_mib", "{:,.0f}"),
]


def table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt.format(r[name]) for name, fmt in COLUMNS) + " |" for r in results]
    return "\n".join(lines)


def growth(results: list[dict]) -> str:
    """Each measure's ratio between the two largest sizes, and carried on to 100M and 1B inputs."""
    small, large = results[-2], results[-1]
    steps = math.log10(large["inputs"] / small["inputs"])
    lines = [f"growth from {small['inputs']:,} to {large['inputs']:,} inputs, and carried on (on paper):"]
    for name, _ in COLUMNS[1:]:
        if not small[name] or not large[name]:
            continue
        ratio = large[name] / small[name]
        per_decade = ratio ** (1 / steps) if steps else 1.0
        guesses = ", ".join(
            f"{target:.0e}: {large[name] * per_decade ** math.log10(target / large['inputs']):,.1f}"
            for target in (1e8, 1e9)
        )
        lines.append(f"  {name}: x{ratio:.2f} ({guesses})")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/resnet-batch-scale256"))
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per run")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument(
        "--rows-per-file", type=int, default=200_000, help="part file size: smaller, more parts (what fencing costs)"
    )
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for size in sorted(args.sizes):
        results.append(measure(args.workdir, size, args.timeout, args.rows_per_file))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{os.cpu_count()} cores; null model, {TINY_IMAGES} distinct 256x256 JPEGs behind hard links\n")
    print(table(results))
    if len(results) > 1:
        print("\n" + growth(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
