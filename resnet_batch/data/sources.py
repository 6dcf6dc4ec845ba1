"""Input listing: directories, files, globs, fsspec URIs and manifests -> a table of paths.

The result has a `path` column (absolute local path, or the full URI with its scheme)
plus any extra manifest columns, one row per distinct input.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from ..core.columns import PATH
from ..core.errors import UsageError, cannot, one_line
from ..core.identity import as_text, from_text, normalise_local
from ..core.storage import NotRegularFile, filesystem, is_local, is_store_error, scheme_of
from .manifests import (
    INLINE_BYTES,
    LIST_ERROR,
    MANIFEST_EXTENSIONS,
    TAR_EXTENSIONS,
    TAR_OFFSET,
    TAR_SIZE,
    is_image,
)
from .shards import list_tar_members

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

GLOB_CHARS = "*?["


def is_glob(uri: str) -> bool:
    """A pattern only where nothing by that name exists: `photos[2024]` is that folder when
    there is one, and `q[1].jpg` that file, never the names their brackets would match."""
    if not any(c in uri for c in GLOB_CHARS):
        return False
    fs, path = filesystem(uri)
    try:
        return not (os.path.lexists(from_text(path)) if scheme_of(uri) == "" else fs.exists(path))
    except (OSError, ValueError):
        return True  # the pattern's own listing says what is wrong


def is_manifest(uri: str) -> bool:
    return uri.lower().endswith(MANIFEST_EXTENSIONS)


def to_uri(fs: AbstractFileSystem, path: str, original: str) -> str:
    """An input's identity (core/identity.py): a normalised local path (file:// URIs too),
    or the full URI."""
    if is_local(original):
        return as_text(normalise_local(path))
    uri = fs.unstrip_protocol(path)  # object keys are UTF-8 text already
    given, found = scheme_of(original), scheme_of(uri)
    # In the scheme the user wrote: adlfs names az:// objects abfs://, gcsfs gcs:// ones gs://.
    return f"{given}{uri[len(found) :]}" if given and found and given != found else uri


def _is_hidden(path: str, root: str) -> bool:
    rel = path[len(root) :].lstrip("/")
    return any(part.startswith(".") for part in rel.split("/"))


def is_tar(uri: str) -> bool:
    return uri.lower().endswith(TAR_EXTENSIONS)


def list_location(uri: str) -> list[str]:
    """Image files (and tar shards) under a directory, matching a glob, or the file itself."""
    try:
        return _list_location(uri)
    except UsageError:
        raise
    except Exception as exc:  # missing bucket, denied listing, bad endpoint
        if not (is_store_error(exc) or isinstance(exc, ValueError)):
            raise
        raise cannot(f"list input {uri}", exc) from None


def _list_location(uri: str) -> list[str]:
    fs, path = filesystem(uri)
    if is_glob(uri):
        # Anything but a folder: a FIFO or a broken link gets its row (and its error).
        found = [p for p in fs.glob(path) if not fs.isdir(p)]
        if not found:
            raise UsageError(f"input glob {uri} matches no files")
        return sorted(to_uri(fs, p, uri) for p in found)
    if fs.isdir(path):
        found = [p for p in fs.find(path) if (is_image(p) or is_tar(p)) and not _is_hidden(p, path)]
        if not found:
            log.warning("input directory %s holds no image files", uri)
        return sorted(to_uri(fs, p, uri) for p in found)
    exists = os.path.lexists(path) if scheme_of(uri) == "" else fs.exists(path)
    if exists or is_image(path):
        # A named image that is missing still gets its row (error not_found).
        return [to_uri(fs, path, uri)]
    if not is_local(uri) and scheme_of(uri) != "memory":
        fs.ls(path.split("/", 1)[0])  # surfaces a missing bucket or denied access as OSError
    raise UsageError(f"input {uri} does not exist (expected a directory, image file, glob or manifest)")


def shard_table(uri: str) -> pa.Table:
    """A shard's members, or one row saying why it cannot be read: one bad shard among
    thousands costs its own row, not the job."""
    try:
        return list_tar_members(uri)
    except NotRegularFile as exc:
        return with_internal_columns(pa.table({PATH: [uri], LIST_ERROR: [f"not_a_file: {one_line(exc)}"]}))
    except UsageError as exc:
        return unlisted(uri, str(exc))


def unlisted(uri: str, message: str) -> pa.Table:
    return with_internal_columns(pa.table({PATH: [uri], LIST_ERROR: [f"list_failed: {message}"]}))


def with_internal_columns(table: pa.Table) -> pa.Table:
    """Tar offset/size (-1 where a row is not a tar member: numpy batches have no integer
    nulls) and the listing error (null where there is none) present."""
    for name in (TAR_OFFSET, TAR_SIZE):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.int64()))
        table = table.set_column(table.column_names.index(name), name, pc.fill_null(table[name], -1))
    if LIST_ERROR not in table.column_names:
        table = table.append_column(LIST_ERROR, pa.nulls(table.num_rows, pa.string()))
    return table


def location_table(uri: str) -> pa.Table:
    return files_table(list_location(uri))


def files_table(found: Iterable[str]) -> pa.Table:
    """Named image files as rows, tar shards among them as their members' rows."""
    tables = [shard_table(u) for u in found if is_tar(u)]
    images = [u for u in found if not is_tar(u)]
    return pa.concat_tables([pa.table({PATH: pa.array(images, pa.string())}), *tables], promote_options="default")


def inline_memory_bytes(table: pa.Table) -> pa.Table:
    """memory:// exists only in this process, so its bytes travel with the rows."""
    paths = table.column(PATH).to_pylist()
    if not any(p.startswith("memory://") for p in paths):
        return table
    fs = fsspec.filesystem("memory")
    blobs = []
    for p in paths:
        try:
            blobs.append(fs.cat_file(p) if p.startswith("memory://") else None)
        except FileNotFoundError:
            blobs.append(None)  # the decode stage reports not_found
    return table.append_column(INLINE_BYTES, pa.array(blobs, pa.binary()))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, nulls for those it lacks."""
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def drop_duplicate_paths(table: pa.Table) -> pa.Table:
    """Each path once, at its first occurrence, in listing order."""
    n = table.num_rows
    indexed = table.select([PATH]).append_column("_i", pa.array(range(n), type=pa.int64()))
    first = indexed.group_by(PATH, use_threads=False).aggregate([("_i", "min")]).column("_i_min")
    if len(first) == n:
        return table
    log.warning("%d duplicate inputs listed; each path is labeled once", n - len(first))
    return table.take(first.take(pc.sort_indices(first)))
