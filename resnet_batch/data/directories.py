"""One directory (or bucket prefix) listed a page at a time: walks never hold a whole one.

A flat folder of 10M images, or a prefix of 10M objects, is read as its API pages it:
`os.scandir` in chunks, S3's ListObjectsV2 pages (s3fs, without its directory cache, which
would keep every entry). Other fsspec filesystems list a directory in one call.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

import pyarrow as pa
from fsspec.asyn import sync
from fsspec.implementations.local import LocalFileSystem

from ..core.errors import one_line
from ..core.identity import from_text
from ..core.storage import filesystem, scheme_of
from .manifests import is_image
from .sources import files_table, is_tar, to_uri, unlisted, with_internal_columns

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


log = logging.getLogger(__name__)

PAGE_ENTRIES = 10_000  # entries of one directory per listed page (S3 pages hold 1,000)


@dataclass(frozen=True)
class ListedPage:
    """One page of a directory's listing: its inputs, the sub-directories it names, and how
    many hidden entries (names starting with ".") it left out."""

    table: pa.Table
    subdirs: list[str]
    hidden: int = 0


def list_directory(uri: str, page: int = PAGE_ENTRIES) -> Iterator[ListedPage]:
    """A directory's images (tar shards expanded to members) and sub-directories, a page of
    at most `page` entries at a time, each page in name order.

    Symbolic links are followed: a linked folder is walked (unless it leads back to one of
    its own ancestors), a linked file is an input. FIFOs, sockets and devices named like
    images are inputs too, whose rows say they are not regular files. Hidden entries are
    left out and counted. A directory that cannot be listed (or stops listing) becomes a row
    carrying the error (`list_failed`), so the job goes on and the summary names it.
    """
    fs, path = filesystem(uri)
    if scheme_of(uri) == "":
        path = from_text(path)  # a folder whose name is not UTF-8 is walked by its original bytes
    try:
        for entries in _pages(fs, path, page):
            yield _listed_page(fs, path, uri, entries)
    except (OSError, ValueError) as exc:
        yield ListedPage(unlisted(uri, f"cannot list {uri}: {type(exc).__name__}: {one_line(exc)}"), [])


def _pages(fs: AbstractFileSystem, path: str, page: int) -> Iterator[list[dict]]:
    if isinstance(fs, LocalFileSystem):
        with os.scandir(path) as entries:  # readdir order: the same on every listing of an unchanged folder
            while chunk := [_local_entry(e) for e in islice(entries, page)]:
                yield chunk
    elif hasattr(fs, "_iterdir"):  # s3fs: ListObjectsV2 with a delimiter, page by page
        yield from _s3_pages(fs, path, page)
    else:
        yield fs.ls(path, detail=True)


def _local_entry(entry: os.DirEntry) -> dict:
    if entry.is_symlink():
        return {"name": entry.path, "type": "other", "islink": True}
    kind = (
        "directory"
        if entry.is_dir(follow_symlinks=False)
        else "file"
        if entry.is_file(follow_symlinks=False)
        else "other"
    )
    return {"name": entry.path, "type": kind}


def _s3_pages(fs: AbstractFileSystem, path: str, page: int) -> Iterator[list[dict]]:
    from s3fs.errors import translate_boto_error

    bucket, key, _ = fs.split_path(path)
    listing = fs._iterdir(bucket, prefix=f"{key.rstrip('/')}/" if key else "", delimiter="/")
    while True:
        try:
            entries = sync(fs.loop, _next_entries, listing, page)
        except (OSError, ValueError):
            raise
        except Exception as exc:  # botocore's ClientError: as the OSError s3fs's own calls raise
            raise translate_boto_error(exc) from exc
        if entries:
            yield entries
        if len(entries) < page:
            return


async def _next_entries(listing: AsyncIterator, n: int) -> list[dict]:
    entries = []
    async for entry in listing:  # leaving the loop keeps the generator where it stopped
        entries.append(entry)
        if len(entries) == n:
            break
    return entries


def _listed_page(fs: AbstractFileSystem, path: str, uri: str, entries: list[dict]) -> ListedPage:
    found, subdirs, hidden = [], [], 0
    for entry in sorted(entries, key=lambda e: e["name"]):
        name = entry["name"].rstrip("/")
        if name == path.rstrip("/"):
            continue
        if posixpath.basename(name).startswith("."):
            hidden += 1
            continue
        kind = _followed_kind(name, entry) if entry.get("islink") else entry["type"]
        if kind == "directory":
            subdirs.append(to_uri(fs, name, uri))
        elif is_image(name) or (is_tar(name) and kind == "file"):
            found.append(to_uri(fs, name, uri))
    return ListedPage(with_internal_columns(files_table(found)), subdirs, hidden)


def _followed_kind(link: str, entry: dict) -> str:
    """What a local symbolic link leads to: "directory" (one that is not an ancestor of the
    link, which would make the walk endless), "file", or "other" (broken, a cycle, a FIFO)."""
    try:
        target = os.path.realpath(link)
        st = os.stat(link)
    except OSError:
        return "other"  # a broken link named like an image still gets its row (not_found)
    if stat.S_ISDIR(st.st_mode):
        ancestors = {os.path.realpath(a) for a in _ancestors(link)}
        if target in ancestors:
            log.warning("not following %s: it leads back to %s, which holds it", link, target)
            return "cycle"
        return "directory"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _ancestors(path: str):
    parent = os.path.dirname(path)
    while parent and parent != path:
        yield parent
        path, parent = parent, os.path.dirname(parent)
