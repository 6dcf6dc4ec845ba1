"""Filesystem access for local paths and fsspec URIs.

Credentials and endpoints come from each ecosystem's standard places (for S3 the AWS
environment variables, AWS_ENDPOINT_URL, profiles and instance roles); nothing here
takes or logs them.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import fsspec
from fsspec import AbstractFileSystem

from . import web
from .errors import UsageError, one_line, require

log = logging.getLogger(__name__)
T = TypeVar("T")

# scheme -> (python module the fsspec implementation needs, extra that installs it)
SCHEMES: dict[str, tuple[str | None, str | None]] = {
    "file": (None, None),
    "local": (None, None),
    "memory": (None, None),
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
    "http": ("aiohttp", "http"),
    "https": ("aiohttp", "http"),
}
READ_ONLY_SCHEMES = {"http", "https"}
# A store that does not answer, as its clients raise it: an OSError of the connection, or
# one of these (botocore's connection errors, aiohttp's), which the fsspec clients let through.
UNREACHABLE_ERRORS = frozenset(
    (
        "ConnectionError",  # botocore
        "HTTPClientError",  # botocore
        "ClientConnectionError",  # aiohttp (gcsfs, adlfs)
        "ServerTimeoutError",  # aiohttp
        "ServiceRequestError",  # azure-core: the request never reached the service
        "ServiceResponseError",  # azure-core: the connection broke before the answer
    )
)
# The store clients whose errors are not OSErrors (by module): a failure of the store, not of this code.
STORE_CLIENTS = ("botocore.", "aiobotocore.", "azure.", "google.", "aiohttp.", "gcsfs.", "adlfs.", "s3fs.")
FINAL_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_unreachable(exc: BaseException) -> bool:
    """`exc` says the store did not answer (worth retrying), not what it answered."""
    if isinstance(exc, FINAL_ERRORS):
        return False
    # web.ServerBusy: an HTTP server that is there but cannot answer now (5xx, 429)
    if (
        isinstance(exc, (ConnectionError, TimeoutError, web.ServerBusy))
        or getattr(exc, "errno", None) in UNREACHABLE_ERRNOS
    ):
        return True
    return any(kind.__name__ in UNREACHABLE_ERRORS for kind in type(exc).__mro__)


UNREACHABLE_ERRNOS = frozenset((errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED, errno.ETIMEDOUT))
# How long a read or write is retried while its store does not answer (a blip, a failover),
# beyond the client's own retries. Each try also waits out the client's timeouts (botocore:
# 60 s to connect or read), so a call gives up within about this + 60 s.
STORAGE_RETRY_S = float(os.environ.get("RESNET_BATCH_STORAGE_RETRY_S", "120"))


class StoreUnreachable(ConnectionError):
    """A store that stopped answering, past the retries, as an error every process can carry."""


def is_store_error(exc: BaseException) -> bool:
    """A failure of the storage (an OSError, or a store client's own error), not of this code."""
    return isinstance(exc, OSError) or type(exc).__module__.startswith(STORE_CLIENTS)


def portable(exc: Exception) -> Exception:
    """A store client's error as an OSError of the same words (some, Azure's, cannot be
    pickled, so a Ray task could not raise them); any other error as it is."""
    if isinstance(exc, OSError) or not is_store_error(exc):
        return exc
    kind = StoreUnreachable if is_unreachable(exc) else OSError
    return kind(f"{type(exc).__name__}: {one_line(exc)}")


def retrying(call: Callable[[], T], what: str, budget_s: float | None = None, pause: float = 1.0) -> T:
    """`call()`, tried again while the store does not answer, for at most `budget_s`
    (default STORAGE_RETRY_S), the pauses doubling from `pause` up to 15 s; any other
    error, and the last one, is raised (a store client's as `portable` makes it)."""
    deadline = time.monotonic() + (STORAGE_RETRY_S if budget_s is None else budget_s)
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_unreachable(exc) or time.monotonic() + pause > deadline:
                carried = portable(exc)
                if carried is exc:
                    raise
                raise carried from exc
            log.warning("%s: the store does not answer (%s); trying again in %.0f s", what, exc, pause)
            time.sleep(pause)
            pause = min(2 * pause, 15.0)


def scheme_of(uri: str) -> str:
    """The URI scheme, or "" for a plain local path (Windows drive letters included)."""
    if "://" not in uri:
        return ""
    return urlsplit(uri).scheme.lower()


def is_local(uri: str) -> bool:
    return scheme_of(uri) in ("", "file", "local")


def check_scheme(uri: str, *, for_output: bool = False) -> str:
    scheme = scheme_of(uri)
    if scheme == "":
        return scheme
    if scheme not in SCHEMES:
        valid = ", ".join(f"{s}://" for s in SCHEMES)
        raise UsageError(f"unsupported URI scheme {scheme!r} in {uri}; valid: local paths, {valid}")
    if for_output and scheme in READ_ONLY_SCHEMES:
        raise UsageError(f"{scheme}:// is read-only; write the output to a local path or a bucket")
    module, extra = SCHEMES[scheme]
    if module is not None and extra is not None:
        require(module, extra, needed_for=f"{scheme}://")
    return scheme


def filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    """(filesystem, path inside it) for a local path or URI."""
    if scheme_of(uri) == "":
        return fsspec.filesystem("file"), os.path.abspath(uri)
    check_scheme(uri)
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def join(base: str, *names: str) -> str:
    return "/".join([base.rstrip("/"), *names])


class NotRegularFile(OSError):
    """A FIFO, socket or device: reading it could block forever or never end."""

    def __init__(self, path: str, kind: str):
        super().__init__(f"{path} is {kind}")
        self.path, self.kind = path, kind

    def __reduce__(self):  # raised in Ray workers: pickled with its own arguments
        return type(self), (self.path, self.kind)


FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


@contextmanager
def open_regular(path: str):
    """A local regular file opened for reading; anything else raises NotRegularFile
    (IsADirectoryError for a folder) without blocking: a FIFO is opened non-blocking and
    refused before any read. `path` is a name as identity.as_text spells it: the file
    opened is the one it stands for (identity.from_text)."""
    from .identity import from_text

    try:
        fd = os.open(from_text(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket cannot be opened at all: say what it is
            mode = os.stat(from_text(path)).st_mode
            raise NotRegularFile(path, FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(f"{path} is a directory")
            raise NotRegularFile(path, FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file"))
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def modified_at(fs: AbstractFileSystem, path: str) -> float | None:
    """When `path` was last written (epoch seconds), as any fsspec file system says it
    (local mtime, S3's LastModified, ...); None where it says nothing usable."""
    info = fs.info(path)
    when = info.get("mtime") or info.get("LastModified") or info.get("created")
    when = when.timestamp() if hasattr(when, "timestamp") else when
    return float(when) if isinstance(when, (int, float)) else None


def is_file(uri: str) -> bool:
    """Whether `uri` names a regular file (local: by its original bytes) or an object."""
    fs, path = filesystem(uri)
    try:
        if is_local(uri):
            from .identity import from_text

            return os.path.isfile(from_text(path))
        return bool(fs.isfile(path))
    except OSError:
        return False


class TooManyBytes(OSError):
    """A file larger than the bytes a reader allows; it was not read whole."""

    def __init__(self, path: str, limit: int, size: int | None):
        what = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(f"{path} holds {what}")
        self.path, self.limit, self.size = path, limit, size

    def __reduce__(self):
        return type(self), (self.path, self.limit, self.size)


# Stores whose reads take a byte range (one request, never more than asked for).
RANGED = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory")


def read_bytes_or_raise(uri: str, offset: int = -1, size: int = -1, limit: int | None = None) -> bytes:
    """Read a whole file, or `size` bytes at `offset`; raises FileNotFoundError / OSError
    (NotRegularFile for a local FIFO, socket or device: file:// and local:// too), and
    TooManyBytes, having read at most `limit` + 1 bytes, for a file larger than `limit`."""
    if limit is not None and size > limit:
        raise TooManyBytes(uri, limit, size)
    if is_local(uri):
        with open_regular(uri if scheme_of(uri) == "" else filesystem(uri)[1]) as f:
            if offset >= 0:
                f.seek(offset)
                return f.read(size)
            held = os.fstat(f.fileno()).st_size
            if limit is not None and held > limit:
                raise TooManyBytes(uri, limit, held)
            return f.read()
    fs, path = filesystem(uri)
    if scheme_of(uri) in READ_ONLY_SCHEMES:  # HTTP(S): what each status means, a body cut short
        data = web.read(uri, offset, size, limit)
        if offset >= 0:
            return data
    elif offset >= 0:
        return fs.cat_file(path, start=offset, end=offset + size)
    elif limit is None:
        return fs.cat_file(path)
    elif scheme_of(uri) in RANGED:
        data = fs.cat_file(path, start=0, end=limit + 1)
    else:  # the rest: a stream, read no further than the limit
        with fs.open(path, "rb") as f:
            data = f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise TooManyBytes(uri, limit, None)
    return data


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_special_file(path: str) -> bool:
    """An existing file that is neither a regular file nor a folder (a device, a FIFO)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextmanager
def replaced_atomically(*paths: str, directory: bool = False):
    """Temporary local paths beside `paths`, to write; each becomes its path when the block
    ends without an error, and all are removed when it fails: never a partial file behind.

    They get the modes a plain open() or mkdir() would give (not mkstemp's private ones).
    `directory=True` makes them folders (whose path must not exist yet). A path that is a
    special file (/dev/stdout, a FIFO, a terminal) is written through, never replaced.
    """
    temporaries = []
    try:
        for path in paths:
            if is_special_file(path) and not directory:
                temporaries.append(path)
                continue
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise UsageError(f"--output {path}: folder {folder} does not exist")
            if directory:
                tmp = tempfile.mkdtemp(dir=folder, prefix=".resnet-batch-")
                os.chmod(tmp, 0o777 & ~_umask())
            else:
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".resnet-batch-")
                os.close(fd)
                os.chmod(tmp, 0o666 & ~_umask())
            temporaries.append(tmp)
        yield temporaries
        for tmp, path in zip(temporaries, paths, strict=False):
            if tmp != path:
                os.replace(tmp, path)  # a folder: onto a path that does not exist
    except BaseException:
        for tmp, path in zip(temporaries, paths, strict=False):
            if tmp == path:
                continue  # a special file written through: nothing of ours to remove
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            elif os.path.exists(tmp):
                os.unlink(tmp)
        raise
