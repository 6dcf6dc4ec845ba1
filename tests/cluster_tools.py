"""What the cluster tests do on a host of cluster/netns-cluster.sh, where only the S3 server
is shared: `python -m tests.cluster_tools COMMAND ...`, one JSON line out.

  put-images URI COUNT SEED     COUNT small JPEGs (write_jpegs) under URI
  put FILE URI                  one file
  outcome URI                   the output's rows: {"rows", "paths" (sorted), "errors"}
  get URI FOLDER                the output's part files into FOLDER
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import s3fs

from .conftest import write_jpegs


def _fs() -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem()


def put_images(uri: str, count: int, seed: int) -> dict:
    fs, bucket = _fs(), uri.removeprefix("s3://").split("/")[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    with tempfile.TemporaryDirectory() as folder:
        images = write_jpegs(Path(folder), count, seed=seed, height=16, width=16)
        fs.put([str(p) for p in images], uri.rstrip("/") + "/")
    return {"put": count}


def put(path: str, uri: str) -> dict:
    fs, bucket = _fs(), uri.removeprefix("s3://").split("/")[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.put(path, uri)
    return {"put": 1}


def _parts(fs: s3fs.S3FileSystem, uri: str) -> list[str]:
    return [p for p in fs.find(uri) if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet")]


def outcome(uri: str) -> dict:
    fs = _fs()
    paths, errors = [], 0
    for part in _parts(fs, uri):
        with fs.open(part, "rb") as f:
            table = pq.read_table(f, columns=["path", "error"])
        paths += table.column("path").to_pylist()
        errors += table.num_rows - table.column("error").null_count
    return {"rows": len(paths), "paths": sorted(paths), "errors": errors}


def get(uri: str, folder: str) -> dict:
    fs = _fs()
    parts = _parts(fs, uri)
    Path(folder).mkdir(parents=True, exist_ok=True)
    fs.get(parts, folder.rstrip("/") + "/")
    return {"parts": len(parts)}


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "put-images":
        said = put_images(args[0], int(args[1]), int(args[2]))
    elif command == "put":
        said = put(args[0], args[1])
    elif command == "outcome":
        said = outcome(args[0])
    elif command == "get":
        said = get(args[0], args[1])
    else:
        raise SystemExit(f"unknown command {command!r}; valid: put-images, put, outcome, get")
    print(json.dumps(said))
