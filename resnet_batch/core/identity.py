"""What one input is: the rule every listing, de-duplication and check goes through.

- A local input is its absolute, normalised path (`/a/./b//c.jpg` and `file:///a/b/c.jpg`
  are `/a/b/c.jpg`); a remote input is its full URI, as given (object keys are opaque:
  `a//b` is its own key).
- A file name that is not UTF-8 is carried bytes-safe: its undecodable bytes are written
  `\\xNN` in the `path` column (Parquet strings are UTF-8), and the reader opens the
  original bytes.
- A tar member is (shard, member name). Its `path` is `SHARD/MEMBER`, and the member name
  must stay inside the shard: an absolute name or one with `..` is refused in its row.
  Whether a path is a member is decided by the shard being a regular file, never by the
  spelling alone (a directory may be called `x.tar`).
"""

from __future__ import annotations

import os
import re

__all__ = ["as_text", "local_bytes", "normalise_local", "on_disk", "member_escapes", "split_member", "TAR_SEPARATOR"]

TAR_SEPARATOR = ".tar/"
_ESCAPED_BYTE = re.compile(r"\\x([0-9a-fA-F]{2})")


def as_text(name: str) -> str:
    """`name` (which may hold surrogate-escaped bytes, as os.listdir and sys.argv give
    them) as valid UTF-8 text: undecodable bytes become `\\xNN`."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def local_bytes(path: str) -> list[str]:
    """The names `path` may stand for on disk: itself first, then, where it carries `\\xNN`
    escapes from as_text, the original bytes (as a surrogate-escaped str, for open())."""
    if "\\x" not in path:
        return [path]
    original = _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)) if int(m.group(1), 16) >= 0x80
                                 else chr(int(m.group(1), 16)), path)
    return [path, original] if original != path else [path]


def on_disk(path: str) -> str:
    """The local name `path` stands for: the first of local_bytes(path) that exists."""
    names = local_bytes(path)
    return next((n for n in names if os.path.lexists(n)), names[0])


def normalise_local(path: str) -> str:
    """An absolute, normalised local path: `.`, `..` and repeated slashes resolved
    lexically (symlinks are kept: a link is its own input)."""
    path = os.path.abspath(os.path.expanduser(path))
    return "/" + path.lstrip("/") if path.startswith("//") else path


def member_escapes(name: str) -> bool:
    """True when a tar member's name would leave its shard: absolute, or climbing with `..`."""
    return name.startswith("/") or ".." in name.split("/")


def split_member(path: str, is_file) -> tuple[str, str] | None:
    """(shard, member) when `path` names a member of a tar shard, else None.

    `is_file(shard)` tells whether the candidate shard is a regular file: only then is
    the rest of the path a member's name rather than a folder's content.
    """
    at = path.lower().find(TAR_SEPARATOR)
    while at >= 0:
        shard = path[: at + len(TAR_SEPARATOR) - 1]
        if is_file(shard):
            return shard, path[len(shard) + 1:]
        at = path.lower().find(TAR_SEPARATOR, at + 1)
    return None
