"""What the detection features cost: throughput, peak memory and output size per choice.

    python bench/features.py                          # resnet18, 1,000 generated 500x375 JPEGs
    python bench/features.py --model resnet50 --images 1000 2000 --precision auto

Runs `resnet-batch label` once per configuration on the same images and reports, from each
run's own summary line, the steady images/s (the rate once the first batch is out), relative
to pooled-only; the peak resident memory of the whole job (driver, Ray, decode workers,
actors: the process tree, sampled every 0.2 s); and the output's size on disk. Run with two
--images counts to see that peak memory does not grow with the number of images.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import DEFAULT_DATA, ensure_images, linked_folder, parse_summary  # noqa: E402

CONFIGS = {
    "pooled": [],
    "pooled + c2..c5": ["--features", "pooled,c2,c3,c4,c5"],
    "pooled + spatial c5 (float16)": ["--spatial", "c5"],
    "pooled + spatial c4, --crop none": ["--spatial", "c4", "--crop", "none"],
}


def tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and all its descendants, from /proc."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def run(folder: Path, out: Path, args, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        "resnet-batch",
        "label",
        str(folder),
        "--output",
        str(out),
        "--model",
        args.model,
        "--weights",
        "none",
        "--precision",
        args.precision,
        *extra,
    ]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    peak = 0

    def sample():
        nonlocal peak
        while job.poll() is None:
            peak = max(peak, tree_rss_bytes(job.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = job.communicate()
    sampler.join()
    if job.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr[-2000:]}")
    size = sum(p.stat().st_size for p in out.glob("part-*.parquet"))
    return {**parse_summary(stdout), "peak_rss": peak, "output_bytes": size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--images", type=int, nargs="+", default=[1000])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/resnet-batch-features"))
    p.add_argument("--only", nargs="+", choices=list(CONFIGS), help="configurations to run (default: all)")
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    paths = ensure_images(args.data, max(args.images))
    for n in args.images:
        folder = linked_folder(paths[:n], args.workdir)
        print(f"{args.model}, {args.precision}, {n} images:")
        base = None
        for name in args.only or CONFIGS:
            r = run(folder, args.workdir / "out", args, CONFIGS[name])
            base = base or r["steady_rate"]
            print(
                f"  {name:34s} steady {r['steady_rate']:6.1f} images/s ({r['steady_rate'] / base:4.2f}x), "
                f"wall {r['wall']:5.1f}s, peak RSS {r['peak_rss'] / 2**30:5.2f} GiB, "
                f"output {r['output_bytes'] / n / 1024:7.1f} KiB/image",
                flush=True,
            )


if __name__ == "__main__":
    main()
