"""The inputs cut into read units, the shares of Ray Data's read tasks, in listing order.

Nothing here lists a collection: a manifest is checked and split (its splits are read by
the tasks), a directory or bucket prefix is left to a walk (run/listing.py), a glob is
expanded by its read task; only named files are listed, and memory:// (which lives in the
driver's process).
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..core.columns import INTERNAL_PREFIX, PATH
from ..core.errors import UsageError, cannot
from ..core.storage import filesystem, is_local, is_store_error, scheme_of
from .manifests import open_manifest, read_manifest, read_split
from .sources import (
    drop_duplicate_paths,
    files_table,
    inline_memory_bytes,
    is_glob,
    is_manifest,
    list_location,
    location_table,
    to_uri,
    unlisted,
    with_internal_columns,
)

log = logging.getLogger(__name__)

WALK, SPLIT, FILES, GLOB, TABLE = "walk", "split", "files", "glob", "table"
FILES_PER_UNIT = 10_000  # named files per read task, glob matches per table (a shard among them lists its members)
ROWS_PER_TABLE_UNIT = 50_000


@dataclass(frozen=True)
class ReadUnit:
    """One read task's share of the inputs: a directory to walk, a manifest split, named
    files, or rows the driver holds (memory:// lives in its process only)."""

    kind: str
    # By kind: the root (WALK, a str), a ManifestSplit (SPLIT), a tuple of URIs (FILES), the
    # pattern (GLOB, a str), a pa.Table (TABLE).
    source: Any

    @property
    def key(self) -> str:
        """A name for progress reports: the same for a retried task."""
        if self.kind == SPLIT:
            return f"{self.source.uri}@{self.source.start}"
        if self.kind == FILES:
            return f"files:{self.source[0]}"
        if self.kind == TABLE:
            return f"rows:{self.source.column(PATH)[0]}"
        return self.source


@dataclass(frozen=True)
class InputPlan:
    """The inputs, cut into read units in listing order (walks last), and the columns they carry."""

    units: tuple[ReadUnit, ...]
    schema: pa.Schema  # path, the manifests' other columns, the internal columns
    first_input: str | None = None  # one input, to tell local from remote inputs

    @property
    def directories(self) -> tuple[str, ...]:
        return tuple(u.source for u in self.units if u.kind == WALK)

    @property
    def extra_fields(self) -> tuple[pa.Field, ...]:
        return tuple(f for f in self.schema if f.name != PATH and not f.name.startswith(INTERNAL_PREFIX))

    @classmethod
    def of_table(cls, table: pa.Table) -> InputPlan:
        """Inputs the driver already holds as a table (path + extra columns)."""
        table = with_internal_columns(drop_duplicate_paths(table))
        units = tuple(
            ReadUnit(TABLE, table.slice(i, ROWS_PER_TABLE_UNIT)) for i in range(0, table.num_rows, ROWS_PER_TABLE_UNIT)
        )
        return cls(units, table.schema, table.column(PATH)[0].as_py() if table.num_rows else None)


def plan_inputs(inputs: list[str], path_column: str = PATH) -> InputPlan:
    """Each input cut into read units; nothing is listed here but named files and globs.

    Manifests are checked and split (read by the tasks); directories and bucket prefixes
    are walked by tasks; memory:// exists only in the driver's process, so it is read here.
    """
    units: list[ReadUnit] = []
    walks: list[str] = []
    schemas, firsts = [pa.schema([(PATH, pa.string())])], []
    for uri in inputs:
        if scheme_of(uri) == "memory":
            table = inline_memory_bytes(
                with_internal_columns(read_manifest(uri, path_column) if is_manifest(uri) else location_table(uri))
            )
            units += InputPlan.of_table(table).units
            schemas.append(table.schema)
        elif is_manifest(uri):
            manifest = open_manifest(uri, path_column)
            units += [ReadUnit(SPLIT, s) for s in manifest.splits]
            schemas.append(manifest.extras)
            firsts.append(manifest.first_entry)
        elif is_glob(uri):
            _refuse_empty_local_glob(uri)
            units.append(ReadUnit(GLOB, uri))  # expanded by its read task: the driver holds no match
            firsts.append(uri)
        elif _is_directory(uri):
            walks.append(_normalised(uri))
        else:
            found = list_location(uri)
            units += [
                ReadUnit(FILES, tuple(found[i : i + FILES_PER_UNIT])) for i in range(0, len(found), FILES_PER_UNIT)
            ]
            firsts += found[:1]
    roots = _outermost(walks)
    units += [ReadUnit(WALK, root) for root in roots]
    schema = with_internal_columns(pa.unify_schemas(schemas, promote_options="permissive").empty_table()).schema
    first = next(
        (f for f in firsts + [u.source.column(PATH)[0].as_py() for u in units if u.kind == TABLE] + list(walks) if f),
        None,
    )
    return InputPlan(tuple(units), schema, first)


def unit_tables(unit: ReadUnit) -> Iterator[pa.Table]:
    """A split, named files or held rows as tables with the internal columns (walks: run/listing.py)."""
    if unit.kind == SPLIT:
        for table in read_split(unit.source):
            yield with_internal_columns(table)
    elif unit.kind == FILES:
        yield with_internal_columns(files_table(unit.source))
    elif unit.kind == GLOB:
        yield from _glob_tables(unit.source)
    elif unit.kind == TABLE:
        yield unit.source
    else:
        raise ValueError(f"a {unit.kind} unit is read by run/listing.py")


def _refuse_empty_local_glob(uri: str) -> None:
    """A local glob that matches nothing is a bad argument, refused before any work. Python's
    lazy glob looks for a first match; only when it finds none does fsspec's (the one that
    expands it) look again, which, matching nothing, holds nothing. A remote glob that
    matches nothing becomes a `list_failed` row: its listing happens in its read task."""
    if is_local(uri) and next(glob.iglob(filesystem(uri)[1], recursive=True), None) is None:
        list_location(uri)  # raises UsageError: "input glob ... matches no files"


def _glob_tables(uri: str) -> Iterator[pa.Table]:
    try:
        found = list_location(uri)
    except UsageError as exc:
        yield unlisted(uri, str(exc))
        return
    for i in range(0, len(found), FILES_PER_UNIT):
        yield with_internal_columns(files_table(found[i : i + FILES_PER_UNIT]))


def _is_directory(uri: str) -> bool:
    """Whatever is not a directory is listed (or refused, if missing) as named files."""
    fs, path = filesystem(uri)
    try:
        return fs.isdir(path)
    except Exception as exc:  # missing bucket, wrong credentials, bad endpoint
        if not (is_store_error(exc) or isinstance(exc, ValueError)):
            raise
        raise cannot(f"list input {uri}", exc) from None


def _normalised(uri: str) -> str:
    fs, path = filesystem(uri)
    return to_uri(fs, path.rstrip("/"), uri)


def _outermost(directories: list[str]) -> tuple[str, ...]:
    """Each directory once, and none inside another given one (it would be walked twice)."""
    kept: list[str] = []
    for d in sorted(set(directories), key=len):
        outer = next((k for k in kept if d.startswith(k + "/")), None)
        if outer:
            log.warning("input %s lies inside input %s; it is walked once", d, outer)
        else:
            kept.append(d)
    return tuple(sorted(kept))
