"""Output stage: the Parquet dataset directory, its modes, and atomic part files.

The output is its own checkpoint: every part file lists the inputs it holds in `path`,
and a part file becomes visible only once it is complete (rename on local disks; object
stores publish an object only when its upload completes). Readers skip the `_`-prefixed
temporary files and the run description `_resnet_batch.json`, as pyarrow, pandas, polars
and DuckDB do by default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core import checks
from ..core.columns import ERROR, PATH, read_run_metadata
from ..core.errors import UsageError, one_line
from ..core.pathset import EMPTY, path_hashes
from ..core.storage import check_scheme, filesystem, is_local, join, scheme_of
from .ownership import LEASE_FILE, RUN_FILE, OutputLease, refuse_inside_job_output

log = logging.getLogger(__name__)

MODES = ("error", "overwrite", "resume")
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
TMP_PREFIX = "_tmp-"
# Settings that change the numbers in the output; resuming with other values would mix runs.
RESUME_KEYS = ("model", "weights", "preprocessing", "labels", "top_k", "embeddings", "embedding_dtype", "features",
               "spatial", "review", "extra_columns")


@dataclass
class WriteStats:
    rows: int = 0
    files: int = 0
    errors: Counter = field(default_factory=Counter)

    def add(self, other: "WriteStats") -> None:
        self.rows += other.rows
        self.files += other.files
        self.errors.update(other.errors)


def error_category(error: str) -> str:
    return error.split(":", 1)[0]


class OutputDir:
    def __init__(self, uri: str):
        check_scheme(uri, for_output=True)
        self.uri = uri
        self.fs, self.path = filesystem(uri)
        self.atomic_rename = is_local(uri)
        # memory:// lives in one process: only the driver can write there.
        self.driver_only = scheme_of(uri) == "memory"
        # Part files never change once visible (named by what they hold): each footer is read once.
        self._runs: dict[str, dict | None] = {}

    def _names(self) -> list[str]:
        self.fs.invalidate_cache()  # object-store listings are cached per process
        if not self.fs.exists(self.path):
            return []
        if not self.fs.isdir(self.path):
            raise UsageError(f"--output {self.uri} exists and is not a directory")
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path, detail=False)]

    def part_files(self) -> list[str]:
        return sorted(
            join(self.path, n) for n in self._names() if n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX)
        )

    def _named_like_ours(self, name: str) -> bool:
        return name in (RUN_FILE, LEASE_FILE) or name.startswith(TMP_PREFIX) or (
            name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)
        )

    def lease(self) -> OutputLease:
        """The output as this job's alone while the lease is held (output/ownership.py)."""
        return OutputLease(self.fs, self.path, self.uri, self.atomic_rename)

    def check(self, mode: str) -> None:
        """Refuse, before any work, what --mode does not allow; changes nothing."""
        checks.one_of("--mode", mode, MODES)
        refuse_inside_job_output(self.uri, "--output", strictly_inside=True)
        with self._as_usage_error():
            names = [n for n in self._names() if n != LEASE_FILE]
            ours = [n for n in names if self._named_like_ours(n)]
            if mode == "error" and names:
                what = f"{len(ours)} resnet-batch files" if ours else f"{len(names)} other files"
                raise UsageError(
                    f"--output {self.uri} already holds {what}; use --mode resume to finish that run, "
                    "--mode overwrite to replace it, or choose another output"
                )
            if mode != "error":
                self._refuse_foreign_data(names)

    def _refuse_foreign_data(self, names: list[str]) -> None:
        """Parquet files a reader of this output would read, that this tool did not write:
        overwrite must not delete them, and resume must not count them as its rows."""
        foreign = [n for n in names if n.endswith(PART_SUFFIX) and not n.startswith(("_", "."))
                   and not (n.startswith(PART_PREFIX) and self._run_of(join(self.path, n)) is not None)]
        if foreign:
            raise UsageError(
                f"--output {self.uri} holds {len(foreign)} Parquet files resnet-batch did not write "
                f"(e.g. {foreign[0]}); it replaces or resumes only its own output: move them or choose another output"
            )

    def _run_of(self, part: str) -> dict | None:
        """The run description in a part file's footer; None for a file this tool did not write."""
        if part not in self._runs:
            try:
                with self.fs.open(part, "rb") as f:
                    self._runs[part] = read_run_metadata(pq.read_schema(f))
            except (OSError, pa.ArrowException, ValueError):
                self._runs[part] = None
        return self._runs[part]

    def begin(self, mode: str, run_info: dict) -> None:
        """Apply --mode and record the run: called when the first rows are about to be saved,
        so that a job that fails before then leaves the output as it found it."""
        with self._as_usage_error():
            for name in self._names():
                if name == LEASE_FILE or not self._named_like_ours(name):
                    continue  # our lease, and files that are not ours (check() refused foreign Parquet)
                if mode == "overwrite" or name.startswith(TMP_PREFIX):
                    self.fs.rm(join(self.path, name))  # resume: only the temporary files of the run that died
            if self.atomic_rename:  # local disk; object stores have no directories (and s3fs would create a bucket)
                self.fs.makedirs(self.path, exist_ok=True)
        self.record_run(run_info)

    def record_run(self, run_info: dict) -> None:
        """The run record `_resnet_batch.json` (what made the rows, for readers and resume)."""
        with self._as_usage_error():
            with self.fs.open(join(self.path, RUN_FILE), "w") as f:
                json.dump(run_info, f, indent=1, sort_keys=True)

    @contextmanager
    def _as_usage_error(self):
        try:
            yield
        except (UsageError, FileExistsError):
            raise
        except OSError as exc:  # missing bucket, no write permission, unreachable endpoint
            raise UsageError(f"cannot write to --output {self.uri}: {type(exc).__name__}: {one_line(exc)}") from None

    def check_resumable(self, run_info: dict) -> None:
        """Refuse to resume a run whose results were computed with other settings: the run
        record says what the first run was, and every part file's footer what made its rows
        (a run record can be lost; the rows cannot lie)."""
        with self._as_usage_error():
            records = []
            if RUN_FILE in self._names():
                with self.fs.open(join(self.path, RUN_FILE), "r") as f:
                    records.append((RUN_FILE, json.load(f)))
            records += [(part.rsplit("/", 1)[-1], self._run_of(part)) for part in self.part_files()]
        for name, previous in records:
            if previous is None:
                raise UsageError(f"cannot resume {self.uri}: {name} was not written by resnet-batch; "
                                 "move it, or use --mode overwrite")
            changed = [k for k in RESUME_KEYS if previous.get(k) != run_info.get(k)]
            if changed:
                was = ", ".join(f"{k} {previous.get(k)!r} in {name}, {run_info.get(k)!r} now" for k in changed)
                raise UsageError(f"cannot resume {self.uri}: it was written with different {', '.join(changed)} "
                                 f"({was}); use the same settings, or --mode overwrite")

    def completed_hashes(self) -> np.ndarray:
        """Sorted hashes of the `path` of every row in a complete part file, duplicates included.

        Read one file at a time: 16 bytes per row are kept, never the paths themselves.
        """
        chunks = [EMPTY]
        for part in self.part_files():
            with self.fs.open(part, "rb") as f:
                chunks.append(path_hashes(pq.read_table(f, columns=[PATH]).column(PATH).to_pylist()))
        return np.sort(np.concatenate(chunks))

    def write_part(self, table: pa.Table) -> str:
        """Write one part file so that readers never see it half-written.

        The name hashes the paths it holds: a retried write task rewrites the same
        file instead of adding a duplicate.
        """
        digest = hashlib.sha1("\n".join(table.column(PATH).to_pylist()).encode()).hexdigest()[:24]
        name = f"{PART_PREFIX}{digest}{PART_SUFFIX}"
        final = join(self.path, name)
        target = join(self.path, f"{TMP_PREFIX}{uuid.uuid4().hex}{PART_SUFFIX}") if self.atomic_rename else final
        with self.fs.open(target, "wb") as f:
            pq.write_table(table, f, compression="zstd")
        if target != final:
            self.fs.mv(target, final)
        return name

    def write_tables(self, tables: list[pa.Table], schema: pa.Schema, rows_per_file: int) -> WriteStats:
        stats = WriteStats()
        if not tables:
            return stats
        table = pa.concat_tables([t.cast(schema) for t in tables]).combine_chunks()
        for start in range(0, table.num_rows, rows_per_file):
            chunk = table.slice(start, rows_per_file)
            self.write_part(chunk)
            stats.files += 1
            stats.rows += chunk.num_rows
            stats.errors.update(error_category(e) for e in chunk.column(ERROR).to_pylist() if e is not None)
        return stats
