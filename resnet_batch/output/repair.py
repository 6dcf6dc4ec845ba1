"""What a resume, or a reader, sets aside so that an output holds one row per input: parts
a writer made visible after losing its lease (`_fenced-`), rows an output holds twice
(`_repeats-`), parts whose footer cannot be read (`_damaged-`), and copies of a part under
another name. Nothing is deleted: a part set aside is renamed with a `_` prefix, which every
Parquet reader skips."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.columns import PATH
from ..core.pathset import isin_sorted, path_hashes
from ..core.storage import join
from .part_names import (
    DAMAGED_PREFIX,
    FENCED_PREFIX,
    OUR_PART,
    PART_PREFIX,
    PART_SUFFIX,
    REPEATS_PREFIX,
    is_part,
    part_name,
)
from .writer import OutputDir

log = logging.getLogger(__name__)


def untrusted_parts(out: OutputDir, parts: list[str]) -> tuple[list[str], list[str]]:
    """Of `parts`, each footer read once: the damaged (a footer that cannot be read, as after
    a write cut short) and the copies of another (parts whose footers agree on rows, first and
    last path are read, and the one whose name is not the digest of the paths it holds is
    the copy)."""
    groups: dict[tuple, list[str]] = {}
    damaged = []
    for part in parts:
        try:
            with out.fs.open(part, "rb") as f:
                meta = pq.read_metadata(f)
            stats = [meta.row_group(g).column(0).statistics for g in range(meta.num_row_groups)]
            key = (meta.num_rows, *((s.min, s.max) if s is not None and s.has_min_max else None for s in stats))
        except (OSError, pa.ArrowException, ValueError):
            damaged.append(part)
            continue
        groups.setdefault(key, []).append(part)
    copies = []
    for same in (g for g in groups.values() if len(g) > 1):
        for part in same:
            with out.fs.open(part, "rb") as f:
                paths = pq.read_table(f, columns=[PATH]).column(PATH).to_pylist()
            if not _named_for(part.rsplit("/", 1)[-1], paths):
                copies.append(part)
    return damaged, copies


def set_aside_fenced(out: OutputDir) -> None:
    """Parts made visible after their writer lost the lease are renamed `_fenced-...`
    (readers skip them); the inputs they hold are labeled by the job holding the lease."""
    with out.as_usage_error():
        fenced = out.fenced_parts()
        for name in fenced:
            out.fs.mv(join(out.path, name), join(out.path, FENCED_PREFIX + name))
    if fenced:
        log.warning(
            "%d part files of %s were written by a job after it had lost the output's lease: moved to %s..., "
            "never counted",
            len(fenced),
            out.uri,
            FENCED_PREFIX,
        )


def set_aside_repeats(out: OutputDir, repeated: np.ndarray) -> int:
    """Keep one row of each input in `repeated` (path hashes: inputs the output holds more
    than one row of), the first in part-name order, parts named as ours before copies; a
    part holding later ones is written again without them (a new name), then renamed
    `_repeats-...` (readers skip it). A stop half-way leaves repeats that the next resume
    sets aside. The rows set aside."""
    kept: set[bytes] = set()
    dropped = 0
    with out.as_usage_error():
        # Parts named as the writer names them first: a copy ("part-X (1).parquet") goes.
        for part in sorted(out.part_files(), key=lambda p: not OUR_PART.fullmatch(p.rsplit("/", 1)[-1])):
            with out.fs.open(part, "rb") as f:
                table = pq.read_table(f)
            hashes = path_hashes(table.column(PATH).to_pylist())
            drop = np.zeros(len(hashes), dtype=bool)
            for i in np.flatnonzero(isin_sorted(hashes, repeated)):
                drop[i] = hashes[i] in kept
                kept.add(hashes[i])
            if not drop.any():
                continue
            if not drop.all():
                out.write_part(table.filter(pa.array(~drop)))
            name = part.rsplit("/", 1)[-1]
            out.fs.mv(part, join(out.path, REPEATS_PREFIX + name))
            dropped += int(drop.sum())
    log.warning(
        "%s held %d rows beyond the first for %d inputs: one row of each is kept, and the parts that held "
        "the others were set aside as %s... (their other rows written again)",
        out.uri,
        dropped,
        len(repeated),
        REPEATS_PREFIX,
    )
    return dropped


def set_aside_damaged(out: OutputDir) -> None:
    """Resume: part files of ours that cannot be read are renamed `_damaged-...` (readers
    skip them) and their rows are labeled again."""
    with out.as_usage_error():
        for name in out.names():
            if is_part(name) and out.footer(name) == "damaged":
                out.fs.mv(join(out.path, name), join(out.path, DAMAGED_PREFIX + name))
                out.forget(join(out.path, name))
                log.warning(
                    "%s is damaged (its footer cannot be read, as after a write cut short): moved to "
                    "%s%s; its rows are labeled again",
                    join(out.uri, name),
                    DAMAGED_PREFIX,
                    name,
                )


def _named_for(name: str, paths: list[str]) -> bool:
    """Whether `name` is what the writer names a part holding `paths` (a part without a mark
    is named, as parts were before they carried one, by the digest of the paths joined by
    newlines)."""
    match = OUR_PART.fullmatch(name)
    if not match:
        return False
    if match.group("mark"):
        return part_name(paths, match.group("mark")) == name
    return name == f"{PART_PREFIX}{hashlib.sha1(chr(10).join(paths).encode()).hexdigest()[:24]}{PART_SUFFIX}"
