"""Output stage: the Parquet dataset directory, its modes, and atomic part files.

The output is its own checkpoint: every part file lists the inputs it holds in `path`,
and a part file becomes visible only once it is complete (rename on local disks; object
stores publish an object only when its upload completes) and its writer has confirmed it
still holds the output's lease (ownership.Fence). A part is named by an injective digest of
the paths it holds and by its writer's fence mark: `part-DIGEST-MARK.parquet`. A retried
write rewrites the same file; two writers never write the same name. Readers skip the `_`-prefixed
temporary files and the run description `_resnet_batch.json`, as pyarrow, pandas, polars
and DuckDB do by default.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from ..core import checks
from ..core.columns import ERROR, PATH, error_category, read_run_metadata
from ..core.errors import UsageError, cannot, one_line
from ..core.storage import check_scheme, filesystem, is_local, is_store_error, join, scheme_of
from .ownership import (
    FENCE_PREFIX,
    LEASE_FILE,
    RUN_FILE,
    Fence,
    OutputLease,
    read_seals,
)
from .part_names import DAMAGED_PREFIX, OUR_PART, OUR_TMP, PART_PREFIX, PART_SUFFIX, TMP_PREFIX, is_part, part_name
from .record import RunRecord, change_in_words
from .targets import refuse_inside_job_output

log = logging.getLogger(__name__)

MODES = ("error", "overwrite", "resume")


@dataclass
class WriteStats:
    rows: int = 0
    files: int = 0
    errors: Counter = field(default_factory=Counter)

    def add(self, other: WriteStats) -> None:
        self.rows += other.rows
        self.files += other.files
        self.errors.update(other.errors)


class OutputDir:
    def __init__(self, uri: str):
        check_scheme(uri, for_output=True)
        self.uri = uri
        self.fs, self.path = filesystem(uri)
        self.atomic_rename = is_local(uri)
        # memory:// lives in one process: only the driver can write there.
        self.driver_only = scheme_of(uri) == "memory"
        # Part files never change once visible (named by what they hold): each footer is read once.
        self._runs: dict[str, RunRecord | None] = {}
        self.earlier_run: RunRecord | None = None  # a resume's: the run record as it found it
        self.fence: Fence | None = None  # the lease this job's writes confirm (set by lease())

    def names(self) -> list[str]:
        self.fs.invalidate_cache()  # object-store listings are cached per process
        if not self.fs.exists(self.path):
            return []
        if not self.fs.isdir(self.path):
            raise UsageError(f"--output {self.uri} exists and is not a directory")
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path, detail=False)]

    def part_files(self) -> list[str]:
        """The parts whose rows count: every part, less those made visible after their writer
        lost the lease (fenced_parts)."""
        names = self.names()
        fenced = set(self._fenced(names))
        return sorted(join(self.path, n) for n in names if is_part(n) and n not in fenced)

    def rows_on_disk(self) -> int | None:
        """The rows the output's readable part files hold now; None where the output is gone."""
        try:
            if not self.fs.exists(self.path):
                return None
            rows = 0
            for part in self.part_files():
                with self.fs.open(part, "rb") as f:
                    rows += pq.read_metadata(f).num_rows
            return rows
        except (OSError, pa.ArrowException):
            return None

    def fenced_parts(self) -> list[str]:
        return self._fenced(self.names())

    def _fenced(self, names: list[str]) -> list[str]:
        """Parts of a writer whose lease was taken over, that were not there when it was."""
        if not any(n.startswith(FENCE_PREFIX) for n in names):
            return []
        seals = read_seals(self.fs, self.path, names)
        fenced = []
        for name in names:
            match = OUR_PART.fullmatch(name)
            mark = match.group("mark") if match else None
            if mark in seals and name not in seals[mark]:
                fenced.append(name)
        return fenced

    def _parts_marked(self, mark: str) -> list[str]:
        return [n for n in self.names() if (m := OUR_PART.fullmatch(n)) and m.group("mark") == mark]

    def misnamed_parts(self) -> list[str]:
        """Part files not named as write_part names them (its hash of the paths they hold):
        copies, or renamed, whose rows are counted twice where the original is there too."""
        return [n for n in self.names() if is_part(n) and not OUR_PART.fullmatch(n)]

    def _named_like_ours(self, name: str) -> bool:
        return (
            name == RUN_FILE
            or name.startswith(LEASE_FILE)  # the lease, a takeover marker, a lease being written
            or name.startswith(FENCE_PREFIX)
            or bool(OUR_TMP.fullmatch(name))
            or is_part(name)
        )

    def lease(self, on_takeover: Callable[[dict], None] | None = None) -> OutputLease:
        """The output as this job's alone while the lease is held (output/ownership.py); from
        now on every file this OutputDir (and its copies in write tasks) makes visible first
        confirms the lease is still this job's. `on_takeover(record)`: told of a stale lease
        this job removed."""
        lease = OutputLease(
            self.fs, self.path, self.uri, self.atomic_rename, seal=self._parts_marked, on_takeover=on_takeover
        )
        self.fence = lease.fence
        return lease

    def _confirm_fence(self) -> None:
        if self.fence is not None:
            self.fence.confirm(self.fs)

    def check(self, mode: str) -> None:
        """Refuse, before any work, what --mode does not allow; changes nothing."""
        checks.one_of("--mode", mode, MODES)
        refuse_inside_job_output(self.uri, "--output", strictly_inside=True)
        with self.as_usage_error():
            names = [n for n in self.names() if n != LEASE_FILE]
            ours = [n for n in names if self._named_like_ours(n)]
            # Foreign data, which no mode would help with (error mode reads no footer of a part named as ours)
            self._refuse_foreign_data(names, read_ours=mode != "error")
            if mode == "error" and names and not ours:  # a folder of images, say: no run to finish
                raise UsageError(
                    f"--output {self.uri} already holds {len(names)} file{'s' if len(names) != 1 else ''} and is not "
                    "an output of resnet-batch "
                    "(no run record, no part files): choose a new or empty folder"
                )
            if mode == "error" and names:
                raise UsageError(
                    f"--output {self.uri} already holds {len(ours)} resnet-batch files; use --mode resume to finish "
                    "that run, --mode overwrite to replace it, or choose another output"
                )

    def _refuse_foreign_data(self, names: list[str], read_ours: bool = True) -> None:
        """Parquet files a reader of this output would read (sub-folders included), that this
        tool did not write: overwrite must not delete them, and resume must not count them."""

        def is_foreign(name: str) -> bool:
            if (
                not name.endswith(PART_SUFFIX)
                or name.startswith(("_", "."))
                or (OUR_PART.fullmatch(name) and not read_ours)
            ):
                return False
            return not (name.startswith(PART_PREFIX) and self.footer(name) != "foreign")

        foreign = [n for n in names if is_foreign(n)]
        foreign += self._nested_parquet(names)
        if foreign:
            raise UsageError(
                f"--output {self.uri} holds {len(foreign)} Parquet files resnet-batch did not write "
                f"(e.g. {foreign[0]}); it replaces or resumes only its own output: move them or choose another output"
            )

    def _nested_parquet(self, names: list[str]) -> list[str]:
        """Parquet files in sub-folders that readers of the dataset would read (none of ours are there)."""
        found = []
        for name in names:
            if name.startswith(("_", ".")) or not self.fs.isdir(join(self.path, name)):
                continue
            for path in self.fs.find(join(self.path, name)):
                relative = path[len(self.path.rstrip("/")) + 1 :]
                if relative.endswith(PART_SUFFIX) and not any(p.startswith(("_", ".")) for p in relative.split("/")):
                    found.append(relative)
        return found

    def footer(self, name: str) -> str:
        """ "ours" (a run description in its footer), "damaged" (named as ours, footer unreadable:
        a truncated write), or "foreign"."""
        part = join(self.path, name)
        if self._run_of(part) is not None:
            return "ours"
        return "damaged" if OUR_PART.fullmatch(name) and self._unreadable(part) else "foreign"

    def _unreadable(self, part: str) -> bool:
        try:
            with self.fs.open(part, "rb") as f:
                pq.read_schema(f)
            return False
        except (OSError, pa.ArrowException, ValueError):
            return True

    def forget(self, part: str) -> None:
        """A part file moved away: its footer is no longer this output's."""
        self._runs.pop(part, None)

    def _run_of(self, part: str) -> RunRecord | None:
        """The run description in a part file's footer; None for a file this tool did not write."""
        if part not in self._runs:
            try:
                with self.fs.open(part, "rb") as f:
                    self._runs[part] = RunRecord.from_json(read_run_metadata(pq.read_schema(f)))
            except (OSError, pa.ArrowException, ValueError):
                self._runs[part] = None
        return self._runs[part]

    def begin(self, mode: str, record: RunRecord) -> None:
        """Apply --mode and record the run: called when the first rows are about to be saved,
        so that a job that fails before then leaves the output as it found it."""
        with self.as_usage_error():
            for name in self.names():
                if name == LEASE_FILE or not self._named_like_ours(name):
                    continue  # our lease, and files that are not ours (check() refused foreign Parquet)
                if mode == "overwrite" or OUR_TMP.fullmatch(name):
                    self.fs.rm(join(self.path, name))  # resume: only the temporary files of the run that died
            if self.atomic_rename:  # local disk; object stores have no directories (and s3fs would create a bucket)
                self.fs.makedirs(self.path, exist_ok=True)
        if mode == "resume":  # a damaged run record: a footer says what ran as well
            self.earlier_run = self.run_record() or next(filter(None, map(self._run_of, self.part_files())), None)
        self.record_run(record)

    def record_run(self, record: RunRecord) -> None:
        """The run record `_resnet_batch.json` (what made the rows, for readers and resume). A
        resume keeps what the earlier runs recorded of the models that ran."""
        record = record.keeping_what_ran(self.earlier_run)
        with self.as_usage_error():
            self._confirm_fence()
            run_file = join(self.path, RUN_FILE)
            if self.fs.isdir(run_file):  # in the way of the record: set aside, never deleted
                self.fs.mv(run_file, join(self.path, DAMAGED_PREFIX + RUN_FILE), recursive=True)
                log.warning("%s was a folder: moved to %s%s", join(self.uri, RUN_FILE), DAMAGED_PREFIX, RUN_FILE)
            with self.fs.open(run_file, "w") as f:
                json.dump(record.to_json(), f, indent=1, sort_keys=True)

    def run_record(self) -> RunRecord | None:
        """The run record as an object, or None where there is none or it is damaged (said once)."""
        if RUN_FILE not in self.names():
            return None
        try:
            with self.fs.open(join(self.path, RUN_FILE), "r") as f:
                value = json.load(f)
            record = RunRecord.from_json(value)
            if record is not None:
                return record
            problem = f"a JSON {type(value).__name__}, not an object"
        except (ValueError, UnicodeDecodeError) as exc:
            problem = one_line(exc)
        except IsADirectoryError:
            problem = "a folder, not a file"
        log.warning(
            "the run record %s is damaged (%s): the part files' footers say what made the rows, and this "
            "run rewrites it",
            join(self.uri, RUN_FILE),
            problem,
        )
        return None

    @contextmanager
    def as_usage_error(self):
        try:
            yield
        except Exception as exc:  # missing bucket, no write permission, unreachable endpoint
            if isinstance(exc, (UsageError, FileExistsError)) or not is_store_error(exc):
                raise
            raise cannot(f"write to --output {self.uri}", exc) from None

    def check_resumable(self, record: RunRecord) -> None:
        """Refuse to resume a run whose results were computed with other settings: the run
        record says what the first run was, and every part file's footer what made its rows
        (a run record can be lost; the rows cannot lie)."""
        with self.as_usage_error():
            records = [(part.rsplit("/", 1)[-1], self._run_of(part)) for part in self.part_files()]
            if not records:  # no rows yet: the run record is all there is (the footers decide otherwise)
                found = self.run_record()
                records = [(RUN_FILE, found)] if found is not None else []
        for name, previous in records:
            if previous is None:
                raise UsageError(
                    f"cannot resume {self.uri}: {name} was not written by resnet-batch; "
                    "move it, or use --mode overwrite"
                )
            changed = previous.differences(record)
            if changed:
                was = "; ".join(change_in_words(k, getattr(previous, k), getattr(record, k)) for k in changed)
                raise UsageError(
                    f"cannot resume {self.uri}: {was} (in {name}); use the same settings, or --mode overwrite"
                )

    def write_part(self, table: pa.Table) -> str:
        """Write one part file so that readers never see it half-written, and only while this
        job holds the output (else LeaseLost): a retried write task rewrites the same file
        instead of adding a duplicate."""
        name = part_name(table.column(PATH).to_pylist(), self.fence.mark if self.fence else None)
        final = join(self.path, name)
        if not self.atomic_rename:  # an object appears whole when its upload ends: confirm first
            self._confirm_fence()
            with self.fs.open(final, "wb") as f:
                pq.write_table(table, f, compression="zstd")
            return name
        target = join(self.path, f"{TMP_PREFIX}{uuid.uuid4().hex}{PART_SUFFIX}")
        with self.fs.open(target, "wb") as f:
            pq.write_table(table, f, compression="zstd")
        try:
            self._confirm_fence()
        except BaseException:
            self.fs.rm(target)
            raise
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
