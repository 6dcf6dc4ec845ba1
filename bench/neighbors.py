"""Nearest neighbours at scale: the index `resnet-batch neighbors` builds, on N x D float16 vectors.

    python bench/neighbors.py                      # 1,000,000 x 512, two data sets
    python bench/neighbors.py --rows 200000 --noise 2.0

The vectors are stored as float16 (as `--embedding-dtype float16` writes them) and drawn
from a mixture of Gaussian clusters; `--noise` is the spread of a cluster relative to the
distance between cluster centres, so larger is harder for an inverted-file index (2.0:
neighbours are barely closer than strangers). Reports the index neighbors.build_index
chose (nprobe tuned to recall@k >= 0.95 on a 1,000-row sample against exact search), its
build time, the time for every row's k nearest neighbours (what the command does), and the
recall measured again on a fresh sample of 1,000 rows, against exact search.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from resnet_batch import neighbors  # noqa: E402


def vectors(rows: int, dim: int, clusters: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    out = np.empty((rows, dim), np.float16)
    for start in range(0, rows, 100_000):  # float32 only a chunk at a time
        n = min(100_000, rows - start)
        chunk = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, dim)).astype(np.float32)
        out[start:start + n] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--clusters", type=int, default=10_000)
    p.add_argument("--noise", type=float, nargs="+", default=[0.5, 1.0])
    args = p.parse_args()
    import faiss

    print(f"{args.rows} x {args.dim} float16, k={args.k}, {faiss.omp_get_max_threads()} threads, "
          f"{os.cpu_count()} cores")
    for noise in args.noise:
        stored = vectors(args.rows, args.dim, args.clusters, noise, seed=1)
        x = stored.astype(np.float32)  # what neighbors.load_embeddings hands the index
        start = time.monotonic()
        sims, ids, info = neighbors.all_neighbors(x, args.k, threshold=0.95)
        total = time.monotonic() - start
        sample = np.random.default_rng(7).choice(args.rows, 1000, replace=False)
        _, truth = faiss.knn(x[sample], x, args.k + 1, metric=faiss.METRIC_INNER_PRODUCT)
        fresh = neighbors.recall(ids[sample], neighbors._others(truth, sample, args.k))
        print(f"  noise {noise}: {info.index}, nprobe {info.nprobe}, recall@{args.k} on the tuning sample "
              f"{info.recall_at_k:.3f}, on a fresh sample {fresh:.3f}; "
              f"build {info.build_s:.0f}s (incl. tuning), all {args.rows} rows' neighbours {info.search_s:.0f}s "
              f"({args.rows / info.search_s:.0f} rows/s), total {total:.0f}s", flush=True)
        del x, stored


if __name__ == "__main__":
    main()
