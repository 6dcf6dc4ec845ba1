"""Inputs listed inside a file: manifests (.txt, .csv, .parquet) and tar shards.

A manifest entry becomes an input's identity (core/identity.py), relative entries
relative to the manifest; a shard's image members become `shard.tar/member` rows that
carry where their bytes lie, and members that must not be read carry their reason.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..core.columns import PATH, RESERVED_COLUMNS
from ..core.errors import UsageError, one_line
from ..core.identity import as_text, member_escapes, normalise_local
from ..core.storage import NotRegularFile, filesystem, is_local, open_regular, scheme_of

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .ico".split()
)
MANIFEST_EXTENSIONS = (".txt", ".csv", ".parquet")
TAR_EXTENSIONS = (".tar",)
# Internal columns (dropped before writing): where a tar member's bytes lie in its shard,
# the bytes themselves for memory:// inputs, which live only in the driver's process, and
# why a walked directory or shard could not be listed (its row carries that error).
TAR_OFFSET, TAR_SIZE, INLINE_BYTES, LIST_ERROR = "_tar_offset", "_tar_size", "_bytes", "_list_error"


def _ext(path: str) -> str:
    return posixpath.splitext(path.lower())[1]


def ext(path: str) -> str:
    return posixpath.splitext(path.lower())[1]


def is_image(path: str) -> bool:
    return ext(path) in IMAGE_EXTENSIONS


def _resolve_entry(entry: str, base_uri: str) -> str:
    """An entry as an input's identity; relative entries are relative to the manifest's own location."""
    if is_local(entry) and scheme_of(entry):  # file:///x is the local file /x
        return as_text(normalise_local(filesystem(entry)[1]))
    if scheme_of(entry) != "":
        return as_text(entry)
    if entry.startswith("/"):
        return as_text(normalise_local(entry))
    if scheme_of(base_uri) == "":
        return as_text(normalise_local(os.path.join(os.path.dirname(os.path.abspath(base_uri)), entry)))
    return as_text(posixpath.join(base_uri.rsplit("/", 1)[0], entry))


def read_manifest(uri: str, path_column: str = PATH) -> pa.Table:
    from ..core.storage import read_bytes_or_raise

    try:
        data = read_bytes_or_raise(uri)
    except FileNotFoundError:
        raise UsageError(f"manifest {uri} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read manifest {uri}: {type(exc).__name__}: {one_line(exc)}") from None
    lower = uri.lower()
    if lower.endswith(".txt"):
        # Undecodable bytes (a Latin-1 manifest) are kept as the bytes of the name they stand for.
        lines = [line.strip() for line in data.decode("utf-8-sig", "surrogateescape").splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        table = pa.table({PATH: pa.array([""] * len(entries), pa.string())})
        path_column = PATH
    elif lower.endswith(".csv"):
        entries = None
        table = _read_csv(uri, data, path_column)
    else:
        entries = None
        try:
            table = pq.read_table(io.BytesIO(data))
        except pa.ArrowException as exc:
            raise UsageError(f"manifest {uri} is not a readable Parquet file: {one_line(exc)}") from None
    if path_column not in table.column_names:
        raise UsageError(
            f"manifest {uri} has no column {path_column!r}; columns: {', '.join(table.column_names)} "
            "(choose one with --path-column)"
        )
    if entries is None:
        column = table.column(path_column)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            entries = [None if e is None else e.decode("utf-8", "surrogateescape") for e in column.to_pylist()]
        else:
            entries = column.cast(pa.string()).to_pylist()
    paths = pa.array([_resolve_entry(e, uri) if e else "" for e in entries], type=pa.string())
    extras = table.drop_columns([path_column])
    clash = RESERVED_COLUMNS.intersection(extras.column_names)
    if clash:
        raise UsageError(f"manifest {uri} has columns that clash with output columns: {', '.join(sorted(clash))}")
    return extras.add_column(0, PATH, paths)


def list_tar_members(uri: str) -> pa.Table:
    """One row per image member of a WebDataset-style shard: path `shard.tar/key.jpg`.

    Only the headers are read (seeking over member data), so remote shards are not
    downloaded here; workers later fetch each member by byte range. A member named like an
    image that cannot be read as one (a name that leaves the shard, a link, a device) gets
    a row with its reason: it is an input all the same.
    """
    fs, path = filesystem(uri)
    paths, offsets, sizes, errors = [], [], [], []
    try:
        with _open_shard(fs, path, uri) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                if not is_image(member.name) or member.isdir():
                    continue
                error = None
                if member_escapes(member.name):
                    error = "unsafe_member: its name leaves the shard (absolute, or with ..); not read"
                elif not member.isfile():
                    error = "not_a_file: a tar member that is a link or a device, not a regular file"
                paths.append(f"{uri}/{as_text(member.name)}")
                offsets.append(member.offset_data if error is None else -1)
                sizes.append(member.size if error is None else -1)
                errors.append(error)
    except NotRegularFile:
        raise
    except (OSError, tarfile.TarError) as exc:
        raise UsageError(f"cannot read tar shard {uri}: {type(exc).__name__}: {one_line(exc)}") from None
    return pa.table({PATH: pa.array(paths, pa.string()), TAR_OFFSET: pa.array(offsets, pa.int64()),
                     TAR_SIZE: pa.array(sizes, pa.int64()), LIST_ERROR: pa.array(errors, pa.string())})


def _open_shard(fs, path: str, uri: str):
    """Local shards only as regular files (a FIFO named x.tar would block the listing)."""
    return open_regular(path) if scheme_of(uri) == "" else fs.open(path, "rb")


def _read_csv(uri: str, data: bytes, path_column: str) -> pa.Table:
    """A CSV manifest; its path column read as bytes, so that names in another encoding survive."""
    try:
        return pacsv.read_csv(io.BytesIO(data),
                              convert_options=pacsv.ConvertOptions(column_types={path_column: pa.binary()}))
    except pa.ArrowException as exc:
        raise UsageError(f"manifest {uri} is not a readable CSV file: {one_line(exc)}") from None
