"""Nearest neighbours at scale: the index `resnet-batch neighbors` builds, on N x D float16 vectors.

    python bench/neighbors.py                      # 1,000,000 x 512, two data sets
    python bench/neighbors.py --rows 200000 --noise 2.0

The vectors are stored as float16 (as `--embedding-dtype float16` writes them) and drawn
from a mixture of Gaussian clusters; `--noise` is the spread of a cluster relative to the
distance between cluster centres, so larger is harder for an inverted-file index (2.0:
neighbours are barely closer than strangers). Reports the index neighbors.build_index
chose (nprobe tuned to recall@k >= 0.95 on a 1,000-row sample against exact search), its
build time, the search rate for `--queries` rows (all rows is what the command does: the
time for that is rows / rate, printed as an estimate unless --queries covers all rows), and
the recall on those queries, measured against exact search.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from resnet_batch.review import neighbors  # noqa: E402


def vectors(rows: int, dim: int, clusters: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    out = np.empty((rows, dim), np.float16)
    for start in range(0, rows, 100_000):  # float32 only a chunk at a time
        n = min(100_000, rows - start)
        chunk = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, dim)).astype(np.float32)
        out[start : start + n] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--clusters", type=int, default=10_000)
    p.add_argument("--noise", type=float, nargs="+", default=[0.5])
    p.add_argument("--queries", type=int, default=20_000, help="rows searched (timed); 0 = all")
    args = p.parse_args()
    import faiss

    print(
        f"{args.rows} x {args.dim} float16, k={args.k}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} cores"
    )
    for noise in args.noise:
        stored = vectors(args.rows, args.dim, args.clusters, noise, seed=1)
        x = stored.astype(np.float32)  # what neighbors.load_embeddings hands the index
        index, info = neighbors.build_index(x, args.k, threshold=0.95)
        queries = np.random.default_rng(7).choice(args.rows, args.queries or args.rows, replace=False)
        start = time.monotonic()
        _, found = neighbors._search(index, x[queries], args.k + 1)
        search_s = time.monotonic() - start
        checked = queries[:1000]
        _, truth = faiss.knn(x[checked], x, args.k + 1, metric=faiss.METRIC_INNER_PRODUCT)
        reached = neighbors.recall(
            neighbors._others(found[:1000], checked, args.k), neighbors._others(truth, checked, args.k)
        )
        rate = len(queries) / search_s
        estimate = "" if len(queries) == args.rows else " (estimated from the rate)"
        print(
            f"  noise {noise}: {info.index}, nprobe {info.nprobe}; build {info.build_s:.0f}s (k-means, adding, "
            f"tuning); recall@{args.k}: tuning sample {info.recall_at_k:.3f}, 1,000 fresh queries {reached:.3f}; "
            f"search {rate:.0f} rows/s, all {args.rows} rows {args.rows / rate:.0f}s{estimate}",
            flush=True,
        )
        del x, stored, index


if __name__ == "__main__":
    main()
