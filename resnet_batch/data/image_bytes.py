"""One input's bytes: a file's, or a tar member's by byte range from its shard, within
--max-bytes; every way a read fails as the error its row carries (an unreachable bucket
store stops the job instead: a resume reads its rows)."""

from __future__ import annotations

import functools

from ..core.errors import ImageError, one_line
from ..core.identity import shard_candidates, split_member
from ..core.storage import (
    READ_ONLY_SCHEMES,
    NotRegularFile,
    StoreUnreachable,
    TooManyBytes,
    is_file,
    is_unreachable,
    read_bytes_or_raise,
    retrying,
    scheme_of,
)


def read_image_bytes(uri: str, offset: int = -1, size: int = -1, max_bytes: int | None = None) -> bytes:
    """Bytes of a file, or of a tar member (`shard.tar/key.jpg` at `offset` in the shard);
    a file over `max_bytes` is a too_large error, read no further than that."""
    if offset >= 0:
        uri = _shard_of(uri)
    try:
        data = retrying(lambda: read_bytes_or_raise(uri, offset, size, max_bytes), f"reading {uri}")
    except TooManyBytes as exc:
        held = f"{exc.size} bytes" if exc.size is not None else "more bytes"
        raise ImageError("too_large", f"the file holds {held} than --max-bytes {exc.limit} allows") from None
    except FileNotFoundError:
        raise ImageError("not_found", "no such file") from None
    except IsADirectoryError:
        raise ImageError("read_error", "is a directory") from None
    except NotRegularFile as exc:
        raise ImageError("not_a_file", f"{exc.kind}, not a regular file") from None
    except PermissionError:
        raise ImageError("read_error", "permission denied") from None
    except OSError as exc:
        if is_unreachable(exc) and scheme_of(uri) not in READ_ONLY_SCHEMES:
            # The store every input is read from stopped answering, past the retries: no row
            # could be read; the job stops and a resume reads them (one dead web host is a row).
            raise StoreUnreachable(f"reading {uri}: {short_error(exc)}") from None
        raise ImageError("read_error", short_error(exc)) from None
    if not data:
        raise ImageError("empty_file", "file has 0 bytes")
    return data


def _shard_of(member: str) -> str:
    """The shard a tar member's path names: the first `.tar/` prefix that is a file (a member
    may be named `inner.tar/x.jpg`)."""
    found = split_member(member, _is_file)
    return found[0] if found else shard_candidates(member)[0]


_is_file = functools.lru_cache(maxsize=256)(is_file)  # a decode task reads many members of a few shards


def short_error(exc: BaseException, limit: int = 200) -> str:
    return one_line(exc, limit) or type(exc).__name__
