"""What one input is: the rule every listing, de-duplication and check goes through.

- A local input is its absolute, normalised path (`/a/./b//c.jpg` and `file:///a/b/c.jpg`
  are `/a/b/c.jpg`); a remote input is its full URI, as given (object keys are opaque:
  `a//b` is its own key).
- A local name is written in the `path` column (Parquet strings are UTF-8) by one injective
  spelling: a UTF-8 name without a backslash as it is; any other with its backslashes
  doubled and its undecodable bytes as `\\xNN`. So a file literally named `caf\\xe9.jpg`
  (written `caf\\\\xe9.jpg`) and the Latin-1 name "caf" + byte 0xE9 + ".jpg" (written
  `caf\\xe9.jpg`) stay two inputs; the reader opens the original bytes (from_text). Object
  keys are UTF-8 and written as they are.
- A tar member is (shard, member name). Its `path` is `SHARD/MEMBER`, and the member name
  must stay inside the shard: an absolute name or one with `..` is refused in its row.
  Whether a path is a member is decided by the shard being a regular file, never by the
  spelling alone (a directory may be called `x.tar`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

__all__ = ["as_text", "from_text", "normalise_local", "member_escapes", "split_member", "TAR_SEPARATOR"]

TAR_SEPARATOR = ".tar/"
_SPELLED = re.compile(r"\\(\\|x[89a-fA-F][0-9a-fA-F])")  # what as_text writes: a doubled backslash, or a byte >= 0x80


def as_text(name: str) -> str:
    """`name` (a local name, which may hold surrogate-escaped bytes, as os.listdir and
    sys.argv give them) in its injective UTF-8 spelling (the module's docstring)."""
    if "\\" not in name:
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    raw = name.encode("utf-8", "surrogateescape").replace(b"\\", b"\\\\")
    return raw.decode("utf-8", "backslashreplace")


def from_text(path: str) -> str:
    """The local name `path` spells (a surrogate-escaped str, for open()): the inverse of
    as_text. A name with a backslash that as_text cannot have written (`a\\b.jpg`, typed in
    a manifest) is taken literally."""
    if "\\" not in path or "\\" in _SPELLED.sub("", path):
        return path

    def byte(match: re.Match) -> str:
        code = match.group(1)
        if code == "\\":
            return "\\"
        return chr(0xDC00 + int(code[1:], 16))

    return _SPELLED.sub(byte, path)


def normalise_local(path: str) -> str:
    """An absolute, normalised local path: `.`, `..` and repeated slashes resolved
    lexically (symlinks are kept: a link is its own input)."""
    path = os.path.abspath(os.path.expanduser(path))
    return "/" + path.lstrip("/") if path.startswith("//") else path


def member_escapes(name: str) -> bool:
    """True when a tar member's name would leave its shard: absolute, or climbing with `..`."""
    return name.startswith("/") or ".." in name.split("/")


def split_member(path: str, is_file: Callable[[str], bool]) -> tuple[str, str] | None:
    """(shard, member) when `path` names a member of a tar shard, else None.

    `is_file(shard)` tells whether the candidate shard is a regular file: only then is
    the rest of the path a member's name rather than a folder's content.
    """
    for shard in shard_candidates(path):
        if is_file(shard):
            return shard, path[len(shard) + 1 :]
    return None


def shard_candidates(path: str) -> list[str]:
    """Every prefix of `path` ending in `.tar` before a `/`, shortest first: the shards a
    member's path may name."""
    found, at = [], path.lower().find(TAR_SEPARATOR)
    while at >= 0:
        found.append(path[: at + len(TAR_SEPARATOR) - 1])
        at = path.lower().find(TAR_SEPARATOR, at + 1)
    return found
