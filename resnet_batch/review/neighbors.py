"""`resnet-batch neighbors OUT --k K --output DIR`: nearest neighbours and near-duplicate groups.

Cosine similarity of the pooled embeddings (L2-normalised, inner product), with faiss:
- up to EXACT_MAX_ROWS rows, an exact index (IndexFlatIP);
- beyond, an inverted-file index holding float16 vectors (IVF + SQfp16, 2 bytes a value).
  Its `nprobe` is chosen at build time: the smallest that gives recall@k >= TARGET_RECALL
  against exact search on a sample of SAMPLE_QUERIES rows. The recall reached is written
  down with the results.
Rows whose similarity is at least `threshold` are joined into groups (union-find over
neighbour pairs): near-duplicates. DIR gets `neighbors.parquet` (path, neighbors,
similarities, group) and `_neighbors.json` (index, nprobe, recall, threshold, k).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..core.columns import EMBEDDING, PATH
from ..core.errors import UsageError, require
from ..core.storage import replaced_atomically
from ..model.registry import NO_WEIGHTS
from ..output import features

log = logging.getLogger(__name__)

EXACT_MAX_ROWS = 50_000
TARGET_RECALL = 0.95
RECALL_MARGIN = 0.005  # the tuning sample's standard error is ~0.002: aim a little above
SAMPLE_QUERIES = 1000
NPROBES = (4, 8, 16, 32, 64, 128, 256)
QUERY_ROWS = 16384  # queries per search call: bounds the result buffers
# k-means on 40 vectors per list (faiss's floor is 39), 10 rounds: the lists only route queries,
# and the recall check below catches a poor partition by probing more of them.
TRAIN_PER_LIST = 40
TRAIN_ITERATIONS = 10
RESULT_FILE = "neighbors.parquet"
INFO_FILE = "_neighbors.json"


@dataclass
class IndexInfo:
    index: str
    rows: int
    dim: int
    k: int
    threshold: float
    nlist: int = 0
    nprobe: int = 0
    recall_at_k: float = 1.0  # measured against exact search on a sample (1.0: exact index)
    sample: int = 0
    build_s: float = 0.0
    search_s: float = 0.0


def load_embeddings(output: str, progress: Callable[[int, int], None] | None = None) -> tuple[list[str], np.ndarray]:
    """Paths and L2-normalised float32 embeddings of the rows without an error."""
    dataset, run = features.open_output(output)
    if run.weights == NO_WEIGHTS:
        log.warning(
            "%s was labeled with --weights none: random weights' embeddings make every image look alike, and "
            "the groups found here mean nothing",
            output,
        )
    if EMBEDDING not in dataset.schema.names:
        raise UsageError(
            f"{output} has no embeddings (written with --no-embeddings or without 'pooled' in "
            "--features): nothing to compare"
        )
    paths, chunks = [], []
    for batch in features.read(output, [EMBEDDING], batch_rows=65536, progress=progress):
        paths += batch[PATH]
        chunks.append(batch[EMBEDDING])
    vectors = (
        np.ascontiguousarray(np.concatenate(chunks).astype(np.float32, copy=False))
        if chunks
        else np.zeros((0, 1), np.float32)
    )
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.maximum(norms, 1e-12)
    return paths, vectors


def _search(index: Any, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims, ids = [], []
    for start in range(0, len(vectors), QUERY_ROWS):
        s, i = index.search(vectors[start : start + QUERY_ROWS], k)
        sims.append(s)
        ids.append(i)
    return np.concatenate(sims), np.concatenate(ids)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k that the index found, over the sample."""
    k = exact.shape[1]
    return float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found.tolist(), exact.tolist(), strict=False)]))


def build_index(vectors: np.ndarray, k: int, threshold: float, seed: int = 0):
    """An index over `vectors` and what it is; IVF indexes are tuned to TARGET_RECALL."""
    faiss = require("faiss", "neighbors")
    n, dim = vectors.shape
    start = time.monotonic()
    if n <= EXACT_MAX_ROWS:
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index, IndexInfo("exact (IndexFlatIP)", n, dim, k, threshold, build_s=time.monotonic() - start)
    nlist = int(2 ** round(math.log2(4 * math.sqrt(n))))  # ~4 sqrt(N) lists, a power of two
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.niter = TRAIN_ITERATIONS
    rng = np.random.default_rng(seed)
    index.train(vectors[rng.choice(n, size=min(n, TRAIN_PER_LIST * nlist), replace=False)])
    index.add(vectors)
    # nprobe: the smallest that reaches the target recall on a sample, against exact search
    # (faiss.knn reads `vectors` in place: no second copy of them).
    rows = rng.choice(n, size=min(n, SAMPLE_QUERIES), replace=False)
    _, truth = faiss.knn(vectors[rows], vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    reached = 0.0
    for nprobe in NPROBES:
        index.nprobe = nprobe
        reached = recall(_others(index.search(vectors[rows], k + 1)[1], rows, k), _others(truth, rows, k))
        if reached >= TARGET_RECALL + RECALL_MARGIN or nprobe >= nlist:
            break
    if reached < TARGET_RECALL:
        log.warning(
            "recall@%d is only %.3f with nprobe %d of %d lists: the embeddings have no neighbourhood "
            "structure an inverted file can use; near-duplicates (very close pairs) are still found, "
            "other neighbours are approximate",
            k,
            reached,
            index.nprobe,
            nlist,
        )
    info = IndexInfo(
        f"IVF{nlist},SQfp16",
        n,
        dim,
        k,
        threshold,
        nlist=nlist,
        nprobe=index.nprobe,
        recall_at_k=reached,
        sample=len(rows),
        build_s=time.monotonic() - start,
    )
    return index, info


def _others(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each row's first k neighbours other than itself (the row itself is always found)."""
    return np.array(
        [[j for j in found if j != row][:k] for row, found in zip(rows.tolist(), ids.tolist(), strict=False)]
    )


def groups(ids: np.ndarray, sims: np.ndarray, threshold: float) -> np.ndarray:
    """Group id per row (its component's smallest row), -1 for rows with no near-duplicate."""
    n = len(ids)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero((sims >= threshold) & (ids >= 0))
    for a, b in zip(rows.tolist(), ids[rows, cols].tolist(), strict=False):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    sizes = np.bincount(roots, minlength=n)
    return np.where(sizes[roots] > 1, roots, -1)


def all_neighbors(vectors: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, np.ndarray, IndexInfo]:
    """(similarities, ids) of every row's k nearest other rows, best first; ids -1 when missing."""
    index, info = build_index(vectors, k, threshold)
    start = time.monotonic()
    sims, ids = _search(index, vectors, k + 1)
    info.search_s = time.monotonic() - start
    # Drop each row itself from its list (usually first; with duplicates it may be anywhere).
    own = ids == np.arange(len(ids))[:, None]
    keep = np.where(own.any(1, keepdims=True), ~own, np.arange(k + 1)[None, :] < k)
    return sims[keep].reshape(len(sims), k), ids[keep].reshape(len(ids), k), info


def find_neighbors(
    output: str, k: int, threshold: float, progress: Callable[[int, int], None] | None = None
) -> tuple[pa.Table, IndexInfo]:
    paths, vectors = load_embeddings(output, progress)
    if len(paths) < 2:
        raise UsageError(f"{output} has {len(paths)} rows with an embedding: nothing to compare")
    k = min(k, len(paths) - 1)
    sims, ids, info = all_neighbors(vectors, k, threshold)
    group = groups(ids, sims, threshold)
    names = np.asarray(paths, dtype=object)
    valid = ids >= 0
    offsets = pa.array(np.arange(0, len(ids) * k + 1, k, dtype=np.int32))
    table = pa.table(
        {
            PATH: pa.array(paths, pa.string()),
            "neighbors": pa.ListArray.from_arrays(
                offsets, pa.array(np.where(valid, names[np.maximum(ids, 0)], np.array(None)).reshape(-1), pa.string())
            ),
            "similarities": pa.ListArray.from_arrays(offsets, pa.array(sims.reshape(-1), pa.float32())),
            "group": pa.array(group, pa.int64(), mask=group < 0),
        }
    )
    return table, info


def write(table: pa.Table, info: IndexInfo, folder: str) -> None:
    """Both files whole or not at all (temporary names, then renamed)."""
    from ..output.targets import check_tool_target

    check_tool_target(folder, "--output", folder=True)
    os.makedirs(folder, exist_ok=True)
    with replaced_atomically(os.path.join(folder, RESULT_FILE), os.path.join(folder, INFO_FILE)) as (
        table_tmp,
        info_tmp,
    ):
        pq.write_table(
            table.replace_schema_metadata({"resnet_batch.neighbors": json.dumps(asdict(info))}),
            table_tmp,
            compression="zstd",
        )
        with open(info_tmp, "w") as f:
            json.dump(asdict(info), f, indent=1)


def largest_groups(folder: str, limit: int) -> list[list[tuple[str, float]]]:
    """The `limit` largest near-duplicate groups of a neighbors output: [(path, best similarity)]."""
    path = os.path.join(folder, RESULT_FILE)
    if not os.path.exists(path):
        raise UsageError(f"{folder} holds no {RESULT_FILE}; run resnet-batch neighbors OUT --output {folder} first")
    table = pq.read_table(path, columns=[PATH, "similarities", "group"]).filter(pc.is_valid(pc.field("group")))
    if not table.num_rows:
        return []
    best = pc.list_element(table.column("similarities"), 0).to_pylist()
    members: dict[int, list[tuple[str, float]]] = {}
    for p, g, s in zip(table.column(PATH).to_pylist(), table.column("group").to_pylist(), best, strict=False):
        members.setdefault(g, []).append((p, s))
    return sorted(members.values(), key=lambda m: (-len(m), m[0][0]))[:limit]
