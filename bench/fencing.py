"""What fencing adds to each part file: the lease read before the part becomes visible.

    python bench/fencing.py                   # local disk and an S3-protocol server (moto) on loopback
    python bench/fencing.py --rows 1000 10000 --parts 50

For each store and part size, writes `--parts` part files of null-model rows (path, error,
one label, no embedding: the smallest rows, where a per-part cost weighs most) through
`OutputDir.write_part`, once without a lease (no fence) and once holding it (each write
confirms the lease first), and prints the milliseconds per part of each and the difference.
The job's rows/s moves by that difference x parts / the run's seconds.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resnet_batch.output.writer import OutputDir  # noqa: E402


def rows(n: int, start: int) -> pa.Table:
    return pa.table(
        {
            "path": [f"/data/images/{i:09d}.jpg" for i in range(start, start + n)],
            "error": pa.nulls(n, pa.string()),
            "topk_ids": [[i % 1000] for i in range(n)],
        }
    )


def per_part_ms(uri: str, n: int, parts: int, fenced: bool) -> float:
    out = OutputDir(uri)
    out.fs.makedirs(out.path, exist_ok=True)
    tables = [rows(n, k * n) for k in range(parts)]
    lease = out.lease().__enter__() if fenced else None
    try:
        times = []
        for table in tables:
            started = time.perf_counter()
            out.write_part(table)
            times.append(time.perf_counter() - started)
    finally:
        if lease is not None:
            lease.__exit__(None, None, None)
    return 1000 * statistics.median(times)


def s3_server() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    import s3fs

    s3fs.S3FileSystem().mkdir("rb-fencing")
    return server, "s3://rb-fencing"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1000, 10000], help="rows per part file")
    p.add_argument("--parts", type=int, default=40, help="part files per measurement")
    args = p.parse_args()
    server, bucket = s3_server()
    print("| store | rows per part | ms per part, no fence | ms per part, fenced | fencing adds |")
    print("| --- | --- | --- | --- | --- |")
    try:
        with tempfile.TemporaryDirectory() as folder:
            for store, base in (("local disk", folder), ("S3 (moto, loopback)", bucket)):
                for n in args.rows:
                    plain = per_part_ms(f"{base}/plain-{n}", n, args.parts, fenced=False)
                    fenced = per_part_ms(f"{base}/fenced-{n}", n, args.parts, fenced=True)
                    print(f"| {store} | {n} | {plain:.2f} | {fenced:.2f} | {fenced - plain:+.2f} ms |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
