"""The names of an output's files: parts, named by an injective digest of the paths they hold
and their writer's fence mark; the temporary files a write goes through; the prefixes a
resume or a reader sets a part aside under."""

from __future__ import annotations

import hashlib
import re

from .ownership import MARK_DIGITS

PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
TMP_PREFIX = "_tmp-"
# Exactly the names write_part gives: a resume deletes temporary files of these names only.
OUR_TMP = re.compile(r"_tmp-[0-9a-f]{32}\.parquet")
# With the writer's fence mark; without one, as written before parts carried it.
OUR_PART = re.compile(rf"part-[0-9a-f]{{24}}(?:-(?P<mark>[0-9a-f]{{{MARK_DIGITS}}}))?\.parquet")
DAMAGED_PREFIX = "_damaged-"  # a part file of ours whose footer cannot be read, set aside by a resume
FENCED_PREFIX = "_fenced-"  # a part made visible after its writer lost the lease, set aside
REPEATS_PREFIX = "_repeats-"  # a part whose rows another part holds too, set aside by a resume


def part_name(paths: list[str], mark: str | None) -> str:
    """The part holding `paths`: a digest of their length-prefixed encodings (injective: no
    path, whatever characters it holds, can pass for two, or two for one), and the writer's
    fence mark."""
    digest = hashlib.sha1()
    for path in paths:
        data = path.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return f"{PART_PREFIX}{digest.hexdigest()[:24]}{'-' + mark if mark else ''}{PART_SUFFIX}"


def is_part(name: str) -> bool:
    """A part file's name, ours or not (`part-*.parquet`)."""
    return name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)
