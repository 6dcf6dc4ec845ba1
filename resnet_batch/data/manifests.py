"""Inputs listed inside a file: manifests (.txt, .csv, .parquet) and tar shards.

A manifest is read in splits, never whole, so that one of any size streams through the
pipeline: a text manifest in byte ranges (each split holds the lines that start in its
range), a Parquet one by row group, a CSV one (whose quoted fields may hold newlines)
as one split read in batches. The driver reads only what it must check before the run:
that the manifest exists, its columns, and its first entry.

An entry becomes an input's identity (core/identity.py), relative entries relative to the
manifest; a shard's image members become `shard.tar/member` rows that carry where their
bytes lie, and members that must not be read carry their reason.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..core.columns import INTERNAL_PREFIX, PATH, RESERVED_COLUMNS
from ..core.errors import UsageError, one_line
from ..core.identity import as_text, from_text, normalise_local
from ..core.storage import NotRegularFile, filesystem, is_local, open_regular, read_bytes_or_raise, scheme_of

IMAGE_EXTENSIONS = frozenset(".jpg .jpeg .jpe .jfif .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .ico".split())
MANIFEST_EXTENSIONS = (".txt", ".csv", ".parquet")
TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz")  # gzip'd ones are listed to say why they cannot be read
GZIP_TAR_EXTENSIONS = (".tar.gz", ".tgz")
# Internal columns (dropped before writing): where a tar member's bytes lie in its shard,
# the bytes themselves for memory:// inputs, which live only in the driver's process, and
# why a walked directory or shard could not be listed (its row carries that error).
TAR_OFFSET, TAR_SIZE, INLINE_BYTES, LIST_ERROR = (
    f"{INTERNAL_PREFIX}{name}" for name in ("tar_offset", "tar_size", "bytes", "list_error")
)
TEXT_SPLIT_BYTES = 4 << 20  # ~50,000 lines: a split is listed, hashed and claimed in a fraction of a second
CSV_BATCH_BYTES = 4 << 20


def ext(path: str) -> str:
    return posixpath.splitext(path.lower())[1]


def is_image(path: str) -> bool:
    return ext(path) in IMAGE_EXTENSIONS


def _resolve_entry(entry: str, base_uri: str) -> str:
    """An entry as an input's identity; relative entries are relative to the manifest's own location."""
    if is_local(entry) and scheme_of(entry):  # file:///x is the local file /x
        return as_text(normalise_local(from_text(filesystem(entry)[1])))
    if scheme_of(entry) != "":
        return entry
    if entry.startswith("/"):
        return as_text(normalise_local(from_text(entry)))
    if scheme_of(base_uri) == "":
        return as_text(normalise_local(os.path.join(os.path.dirname(os.path.abspath(base_uri)), from_text(entry))))
    return posixpath.join(base_uri.rsplit("/", 1)[0], entry)


@dataclass(frozen=True)
class ManifestSplit:
    """Part of a manifest: text bytes [start, stop), Parquet row groups [start, stop), or a whole CSV."""

    uri: str
    path_column: str
    start: int = 0
    stop: int = 0


@dataclass(frozen=True)
class Manifest:
    splits: tuple[ManifestSplit, ...]
    extras: pa.Schema  # its columns besides the path
    first_entry: str | None  # its first input, resolved (None when it lists none)


def open_manifest(uri: str, path_column: str = PATH) -> Manifest:
    """A manifest checked and cut into splits; UsageError if it is missing, unreadable, or
    lacks the path column, or has columns that clash with the output's."""
    try:
        return _open_manifest(uri, path_column)
    except FileNotFoundError:
        raise UsageError(f"manifest {uri} does not exist") from None
    except NotRegularFile as exc:
        raise UsageError(f"cannot read manifest {uri}: {one_line(exc)}") from None
    except pa.ArrowException as exc:
        kind = "CSV" if uri.lower().endswith(".csv") else "Parquet"
        raise UsageError(f"manifest {uri} is not a readable {kind} file: {one_line(exc)}") from None
    except OSError as exc:
        raise UsageError(f"cannot read manifest {uri}: {type(exc).__name__}: {one_line(exc)}") from None


def _open_manifest(uri: str, path_column: str) -> Manifest:
    lower = uri.lower()
    if lower.endswith(".txt"):
        size = _size(uri)
        splits = tuple(
            ManifestSplit(uri, PATH, s, min(size, s + TEXT_SPLIT_BYTES)) for s in range(0, size, TEXT_SPLIT_BYTES)
        )
        # The first entry (to tell local inputs from remote), from the first MiB.
        first_mib = ManifestSplit(uri, PATH, 0, min(size, 1 << 20))
        first = next((t.column(PATH)[0].as_py() for t in read_split(first_mib) if t.num_rows), None)
        return Manifest(splits, pa.schema([]), first)
    with open_input(uri) as f:
        if lower.endswith(".csv"):
            reader = pacsv.open_csv(f, **_csv_options(path_column))
            schema, head = reader.schema, next(iter(reader), None)  # a header alone: no rows
            splits = (ManifestSplit(uri, path_column),)
        else:
            parquet = pq.ParquetFile(f)
            schema = parquet.schema_arrow
            splits = tuple(ManifestSplit(uri, path_column, g, g + 1) for g in range(parquet.num_row_groups))
            head = (
                next(parquet.iter_batches(batch_size=1, columns=[path_column]), None)
                if path_column in schema.names
                else None
            )
    _check_columns(uri, schema.names, path_column)
    entries = _entries(head.column(path_column)) if head is not None and head.num_rows else []
    first = next((_resolve_entry(e, uri) for e in entries if e), None)
    return Manifest(splits, pa.schema([f for f in schema if f.name != path_column]), first)


def _size(uri: str) -> int:
    if scheme_of(uri) == "":
        with open_regular(uri) as f:
            return os.fstat(f.fileno()).st_size
    fs, path = filesystem(uri)
    return fs.size(path)


def open_input(uri: str):
    """Local files only as regular files (a FIFO named x.tar or x.txt would block the read)."""
    if scheme_of(uri) == "":
        return open_regular(uri)
    fs, path = filesystem(uri)
    return fs.open(path, "rb")


def _check_columns(uri: str, names: list[str], path_column: str) -> None:
    if path_column not in names:
        raise UsageError(
            f"manifest {uri} has no column {path_column!r}; columns: {', '.join(names)} (choose one with --path-column)"
        )
    clash = RESERVED_COLUMNS.intersection(n for n in names if n != path_column)
    if clash:
        raise UsageError(f"manifest {uri} has columns that clash with output columns: {', '.join(sorted(clash))}")
    internal = [n for n in names if n.startswith(INTERNAL_PREFIX)]
    if internal:
        raise UsageError(
            f"manifest {uri} has columns named as resnet-batch's own ({', '.join(internal)}): "
            f"rename them (names starting {INTERNAL_PREFIX!r} are reserved)"
        )


def _csv_batches(f, split: ManifestSplit) -> Iterator[pa.RecordBatch]:
    """A CSV manifest's batches; a column whose values change type past the first block
    (where Arrow infers its type) is a UsageError naming the column, the row and the value."""
    reader = pacsv.open_csv(f, **_csv_options(split.path_column))
    rows = 0
    try:
        for batch in reader:
            rows += batch.num_rows
            yield batch
    except pa.ArrowInvalid as exc:
        raise UsageError(_conversion_error(split, reader.schema, rows, exc)) from None


def _conversion_error(split: ManifestSplit, schema: pa.Schema, rows: int, exc: Exception) -> str:
    """Which column, row and value a CSV block failed to convert (read again as text)."""
    bad = [f for f in schema if f.name != split.path_column and not pa.types.is_string(f.type)]
    text = {f.name: pa.string() for f in bad}
    with open_input(split.uri) as f:
        options = _csv_options(split.path_column)
        options["convert_options"] = pacsv.ConvertOptions(column_types={split.path_column: pa.binary(), **text})
        row = 0
        for batch in pacsv.open_csv(f, **options):
            for field in bad:
                column = batch.column(field.name)
                for i, value in enumerate(column.to_pylist()):
                    if row + i >= rows and value is not None and not _converts(value, field.type):
                        return (
                            f"manifest {split.uri}: column {field.name!r} holds {value!r} on row {row + i + 1}, where "
                            f"its first rows made it {field.type}; give the column one type (or quote its values)"
                        )
            row += batch.num_rows
    return f"manifest {split.uri} cannot be read past row {rows}: {one_line(exc)}"


def _converts(value: str, type_: pa.DataType) -> bool:
    try:
        pa.array([value]).cast(type_)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def _csv_options(path_column: str) -> dict:
    """Its path column read as bytes, so that names in another encoding survive."""
    return {
        "read_options": pacsv.ReadOptions(block_size=CSV_BATCH_BYTES),
        "convert_options": pacsv.ConvertOptions(column_types={path_column: pa.binary()}),
    }


def _entries(column: pa.Array) -> list[str | None]:
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return [None if e is None else e.decode("utf-8", "surrogateescape") for e in column.to_pylist()]
    return column.cast(pa.string()).to_pylist()


def read_split(split: ManifestSplit) -> Iterator[pa.Table]:
    """The split's inputs: a `path` column of identities, then the manifest's other columns."""
    lower = split.uri.lower()
    if lower.endswith(".txt"):
        yield _with_paths(pa.table({}), _text_lines(split), split.uri)
        return
    with open_input(split.uri) as f:
        if lower.endswith(".csv"):
            batches = _csv_batches(f, split)
        else:
            batches = pq.ParquetFile(f).iter_batches(row_groups=range(split.start, split.stop))
        for batch in batches:
            table = pa.Table.from_batches([batch])
            # An entry is taken as it is, spaces and all: only a blank one is no input (with
            # its other columns), as a .txt manifest's blank lines.
            entries = [e or "" for e in _entries(table.column(split.path_column))]
            if not all(e.strip() for e in entries):
                table = table.filter(pa.array([bool(e.strip()) for e in entries]))
                entries = [e for e in entries if e.strip()]
            yield _with_paths(table.drop_columns([split.path_column]), entries, split.uri)


def _with_paths(extras: pa.Table, entries: list[str], uri: str) -> pa.Table:
    paths = pa.array([_resolve_entry(e, uri) for e in entries], type=pa.string())
    if not extras.num_columns:
        return pa.table({PATH: paths})
    return extras.add_column(0, PATH, paths)


def _text_lines(split: ManifestSplit) -> list[str]:
    """The entries of the lines that start in [start, stop): the line that straddles `start`
    is the previous split's, the one that straddles `stop` is read to its end."""
    begin = max(split.start - 1, 0)  # one byte back: is `start` itself the start of a line?
    data = read_bytes_or_raise(split.uri, begin, split.stop - begin)
    at = split.stop
    while data and not data.endswith(b"\n"):
        more = read_bytes_or_raise(split.uri, at, 1 << 16)
        if not more:
            break
        end = more.find(b"\n")
        data += more if end < 0 else more[: end + 1]
        at += len(more)
    if split.start > 0:
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
    elif data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    # Undecodable bytes (a Latin-1 manifest) are kept as the bytes of the name they stand for.
    # A line is its entry, spaces and all, less a CRLF file's "\r"; a blank one is no input.
    lines = (line.decode("utf-8", "surrogateescape").removesuffix("\r") for line in data.split(b"\n"))
    return [line for line in lines if line.strip() and not line.startswith("#")]


def read_manifest(uri: str, path_column: str = PATH) -> pa.Table:
    """A whole manifest as one table (for the review tools and small lists)."""
    manifest = open_manifest(uri, path_column)
    tables = [t for s in manifest.splits for t in read_split(s)]
    if not tables:
        return pa.table({PATH: pa.array([], pa.string()), **{f.name: pa.array([], f.type) for f in manifest.extras}})
    return pa.concat_tables(tables, promote_options="default")
