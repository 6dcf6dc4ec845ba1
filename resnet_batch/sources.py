"""Input listing: directories, files, globs, fsspec URIs and manifests -> a table of paths.

The result has a `path` column (absolute local path, or the full URI with its scheme)
plus any extra manifest columns, one row per distinct input.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import UsageError
from .storage import filesystem, scheme_of

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .ico".split()
)
MANIFEST_EXTENSIONS = (".txt", ".csv", ".parquet")
GLOB_CHARS = "*?["


def _ext(path: str) -> str:
    return posixpath.splitext(path.lower())[1]


def is_manifest(uri: str) -> bool:
    return uri.lower().endswith(MANIFEST_EXTENSIONS)


def _to_uri(fs, path: str, original: str) -> str:
    if scheme_of(original) == "":
        return os.path.abspath(path)
    return fs.unstrip_protocol(path)


def _is_hidden(path: str, root: str) -> bool:
    rel = path[len(root):].lstrip("/")
    return any(part.startswith(".") for part in rel.split("/"))


def list_location(uri: str) -> list[str]:
    """Image files under a directory, matching a glob, or the file itself."""
    fs, path = filesystem(uri)
    if any(c in uri for c in GLOB_CHARS):
        found = [p for p in fs.glob(path) if fs.isfile(p)]
        if not found:
            raise UsageError(f"input glob {uri} matches no files")
        return sorted(_to_uri(fs, p, uri) for p in found)
    if fs.isdir(path):
        found = [
            p for p in fs.find(path)
            if _ext(p) in IMAGE_EXTENSIONS and not _is_hidden(p, path)
        ]
        if not found:
            log.warning("input directory %s holds no image files", uri)
        return sorted(_to_uri(fs, p, uri) for p in found)
    if fs.isfile(path) or _ext(path) in IMAGE_EXTENSIONS:
        # A named image that is missing still gets its row (error not_found).
        return [_to_uri(fs, path, uri)]
    raise UsageError(f"input {uri} does not exist (expected a directory, image file, glob or manifest)")


def _resolve_entry(entry: str, base_uri: str) -> str:
    if scheme_of(entry) != "" or entry.startswith("/"):
        return entry
    # Relative entries are relative to the manifest's own location.
    if scheme_of(base_uri) == "":
        return os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(base_uri)), entry))
    return posixpath.join(base_uri.rsplit("/", 1)[0], entry)


def read_manifest(uri: str, path_column: str = "path") -> pa.Table:
    fs, path = filesystem(uri)
    if not fs.exists(path):
        raise UsageError(f"manifest {uri} does not exist")
    data = fs.cat_file(path)
    lower = uri.lower()
    if lower.endswith(".txt"):
        lines = [line.strip() for line in data.decode("utf-8-sig").splitlines()]
        table = pa.table({"path": [line for line in lines if line and not line.startswith("#")]})
        path_column = "path"
    elif lower.endswith(".csv"):
        table = pacsv.read_csv(io.BytesIO(data))
    else:
        table = pq.read_table(io.BytesIO(data))
    if path_column not in table.column_names:
        raise UsageError(
            f"manifest {uri} has no column {path_column!r}; columns: {', '.join(table.column_names)} "
            "(choose one with --path-column)"
        )
    entries = table.column(path_column).cast(pa.string()).to_pylist()
    paths = pa.array([_resolve_entry(e, uri) if e else "" for e in entries], type=pa.string())
    extras = table.drop_columns([path_column])
    reserved = {"path", "width", "height", "topk_ids", "topk_labels", "topk_probs", "embedding", "error", "image"}
    clash = reserved.intersection(extras.column_names)
    if clash:
        raise UsageError(f"manifest {uri} has columns that clash with output columns: {', '.join(sorted(clash))}")
    return extras.add_column(0, "path", paths)


def list_inputs(inputs: list[str], path_column: str = "path") -> pa.Table:
    """All inputs as one table, duplicates removed (first occurrence wins)."""
    tables = []
    for uri in inputs:
        if is_manifest(uri):
            tables.append(read_manifest(uri, path_column))
        else:
            tables.append(pa.table({"path": pa.array(list_location(uri), type=pa.string())}))
    table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({"path": []})
    empty = pc.equal(table.column("path"), "")
    if pc.any(empty).as_py():
        raise UsageError("a manifest lists an empty path")
    return drop_duplicate_paths(table)


def drop_duplicate_paths(table: pa.Table) -> pa.Table:
    n = table.num_rows
    indexed = table.select(["path"]).append_column("_i", pa.array(range(n), type=pa.int64()))
    first = indexed.group_by("path", use_threads=False).aggregate([("_i", "min")]).column("_i_min")
    if len(first) == n:
        return table
    log.warning("%d duplicate inputs listed; each path is labeled once", n - len(first))
    return table.take(pc.sort_indices(first))
