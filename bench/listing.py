"""Listing a large tree: in the driver (fsspec find) vs walked by Ray tasks (resnet_batch.run.listing).

    python bench/listing.py --files 200000 --dirs 400

Creates empty `.jpg` files (names only matter for listing) under --root, then measures the
wall time of each way and how much the driver's own memory (RSS) grows while holding
what it listed. The walk's images are consumed and dropped block by block, as the
pipeline's read task does.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import pyarrow as pa


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_tree(root: Path, files: int, dirs: int) -> None:
    marker = root / f".made-{files}-{dirs}"
    if marker.exists():
        return
    per_dir = files // dirs
    for d in range(dirs):
        sub = root / f"group{d % 20:02d}" / f"dir{d:05d}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(per_dir):
            (sub / f"img_{i:06d}.jpg").touch()
    marker.touch()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=200_000)
    p.add_argument("--dirs", type=int, default=400)
    p.add_argument("--root", type=Path, default=Path("/tmp/resnet-batch-listing"))
    args = p.parse_args()
    make_tree(args.root, args.files, args.dirs)

    import ray

    from resnet_batch.core.storage import filesystem
    from resnet_batch.run.listing import walk

    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    base = rss_mib()
    start = time.monotonic()
    count = sum(level.table.num_rows for level in walk(str(args.root)))
    walk_s, walk_rss = time.monotonic() - start, rss_mib() - base

    base = rss_mib()
    start = time.monotonic()
    fs, root = filesystem(str(args.root))
    found = pa.array(sorted(p for p in fs.find(root) if p.endswith(".jpg")), pa.string())
    find_s, find_rss = time.monotonic() - start, rss_mib() - base
    assert len(found) == count, (len(found), count)

    print(f"{count} files in {args.dirs} directories, {os.cpu_count()} cores")
    print("| way | wall s | driver RSS growth MiB |")
    print("| --- | --- | --- |")
    print(f"| driver listing (fsspec find, Arrow table) | {find_s:.1f} | {find_rss:.0f} |")
    print(f"| walk in Ray tasks (resnet_batch.run.listing.walk) | {walk_s:.1f} | {walk_rss:.0f} |")
    ray.shutdown()


if __name__ == "__main__":
    main()
