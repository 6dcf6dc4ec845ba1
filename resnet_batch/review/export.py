"""`resnet-batch export OUT --format label-studio|imagefolder|csv --output PATH`.

Every format streams the output once (one row group in memory) and is written under a
temporary name, then renamed: a failed export leaves nothing behind. Rows with an error
are left out (`report` lists them).
- label-studio: Label Studio's import JSON, a list of tasks, each with the image and the
  model's top-1 class as a pre-annotation (a `choices` prediction with its probability);
  `--rows review` keeps the rows flagged `needs_review`. The labeling config the tasks go
  with (one choice per class seen) is written beside it: NAME.label-config.xml for NAME.json.
- imagefolder: CLASS/FILE links (or copies, `--copy`; remote inputs are always copied)
  for training with torchvision's ImageFolder and the like.
- csv: one line per row: path, top-1 label and probability, all top-k labels, review columns.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote

import pyarrow.compute as pc

from ..core import checks
from ..core.columns import ENTROPY, ERROR, MARGIN, NEEDS_REVIEW, PATH, TOPK_LABELS, TOPK_PROBS
from ..core.errors import UsageError
from ..core.identity import TAR_SEPARATOR, from_text, member_escapes, split_member
from ..core.storage import filesystem, is_file, is_local, is_special_file, replaced_atomically
from ..data.manifests import TAR_OFFSET, TAR_SIZE
from ..data.shards import list_tar_members
from ..output.features import batches, open_output
from ..output.targets import check_tool_target

if TYPE_CHECKING:
    import pyarrow.dataset

log = logging.getLogger(__name__)

FORMATS = ("label-studio", "imagefolder", "csv")
ROWS = ("all", "review")
COLUMNS = [PATH, TOPK_LABELS, TOPK_PROBS, MARGIN, ENTROPY, NEEDS_REVIEW, ERROR]


def _open(output: str, rows: str):
    """The output's dataset and run description, refused here (before any other word) if
    it cannot give the rows asked for."""
    dataset, run = open_output(output)
    if TOPK_LABELS not in dataset.schema.names:
        raise UsageError(f"{output} has no labels (written with --top-k 0): nothing to export")
    if rows == "review" and NEEDS_REVIEW not in dataset.schema.names:
        raise UsageError("--rows review needs a needs_review column: label with --review-below P")
    return dataset, run


def _rows(dataset: pyarrow.dataset.Dataset, rows: str, progress: Callable[[int, int], None] | None) -> Iterator[dict]:
    for batch in batches(dataset, COLUMNS, progress):
        keep = pc.is_null(batch.column(ERROR))
        if rows == "review":
            keep = pc.and_(keep, batch.column(NEEDS_REVIEW))
        yield from batch.filter(keep).to_pylist()


def label_studio_image(path: str, local_root: str) -> str:
    """The image reference Label Studio resolves: cloud URIs as they are; local files through
    its local-files serving, relative to its LOCAL_FILES_DOCUMENT_ROOT (`local_root`), the
    name's bytes URL-encoded (a `&`, `#`, `%` or `+` in it would otherwise name another file)."""
    if tar_member(path):
        raise UsageError(
            f"{path} is a member of a tar shard, which Label Studio cannot serve; "
            "export --format imagefolder (which extracts members) and label that folder"
        )
    if not is_local(path):
        return path
    # The file's own bytes, not the `\xNN` spelling of a non-UTF-8 name (identity.as_text):
    # a file literally named like that spelling would open instead.
    relative = os.path.relpath(os.fsencode(from_text(path.removeprefix("file://"))), os.fsencode(local_root))
    if relative.startswith(b".."):
        raise UsageError(f"{path} is outside --local-files-root {local_root}")
    return f"/data/local-files/?d={quote(relative, safe='/')}"


def tar_member(path: str) -> tuple[str, str] | None:
    """(shard, member) when a row's path is a member of a tar shard (identity.split_member)."""
    if TAR_SEPARATOR not in path.lower():
        return None
    return split_member(path, is_file)


def label_studio_task(row: dict, model_version: str, local_root: str) -> dict:
    label, prob = row[TOPK_LABELS][0], float(row[TOPK_PROBS][0])
    data = {
        "image": label_studio_image(row[PATH], local_root),
        PATH: row[PATH],
        "topk": ", ".join(f"{lab} {p:.3f}" for lab, p in zip(row[TOPK_LABELS], row[TOPK_PROBS], strict=False)),
    }
    if row.get(MARGIN) is not None:
        data[MARGIN] = round(float(row[MARGIN]), 6)
    return {
        "data": data,
        "predictions": [
            {
                "model_version": model_version,
                "score": prob,
                "result": [
                    {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
                ],
            }
        ],
    }


def label_studio_config(classes: Iterable[str]) -> str:
    """The labeling config the tasks go with: the image, the model's top-k as text, one choice per class."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in sorted(classes))
    return (
        f'<View>\n  <Image name="image" value="$image"/>\n  <Text name="topk" value="$topk"/>\n'
        f'  <Choices name="label" toName="image" choice="single" showInline="true">\n{choices}\n'
        "  </Choices>\n</View>\n"
    )


def config_path(target: str) -> str:
    return os.path.splitext(target)[0] + ".label-config.xml"


def export_label_studio(
    output: str, target: str, rows: str = "all", local_root: str | None = None, progress: Callable | None = None
) -> int:
    if is_special_file(target):
        raise UsageError(
            f"--output {target} is not a regular file, and --format label-studio writes its labeling config "
            "beside its tasks: name a file (--format csv writes through a pipe or /dev/stdout)"
        )
    dataset, run = _open(output, rows)
    if local_root is None:
        local_root = "/"
        log.warning(
            "local images are referenced relative to / (?d=home/...): pass --local-files-root "
            "with Label Studio's LOCAL_FILES_DOCUMENT_ROOT if it is another folder"
        )
    model_version = f"{run.model or '?'} {run.weights or '?'}"
    count, classes = 0, set()
    with replaced_atomically(target, config_path(target)) as (tmp, tmp_config):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("[")
            for row in _rows(dataset, rows, progress):
                f.write(",\n" if count else "\n")
                json.dump(label_studio_task(row, model_version, local_root), f, ensure_ascii=False)
                classes.update(row[TOPK_LABELS])
                count += 1
            f.write("\n]\n")
        with open(tmp_config, "w", encoding="utf-8") as f:
            f.write(label_studio_config(classes))
    return count


NAME_MAX_BYTES = 255  # a file or folder name, on every common Linux file system


def safe_name(name: str, max_bytes: int = NAME_MAX_BYTES) -> str:
    """A class name as one folder name: nothing in it can climb out of the export folder,
    and it fits a file system's name limit (shortened, with a hash of the whole to keep
    two long names apart)."""
    cleaned = re.sub(r"[\x00-\x1f/\\:]+", "_", name).strip().lstrip(".") or "_"
    return _fit(cleaned, max_bytes, name)


def _fit(name: str, max_bytes: int, whole: str) -> str:
    if len(name.encode()) <= max_bytes:
        return name
    stem, ext = os.path.splitext(name)
    ext = ext if len(ext.encode()) <= 16 else ""
    tag = "~" + hashlib.sha1(whole.encode()).hexdigest()[:8]
    room = max_bytes - len(tag.encode()) - len(ext.encode())
    return stem.encode()[:room].decode("utf-8", "ignore") + tag + ext


def _file_name(path: str) -> str:
    # A short hash of the whole path keeps same-named files from different folders apart.
    prefix = f"{hashlib.sha1(path.encode()).hexdigest()[:8]}_"
    base = safe_name(posixpath.basename(path.rstrip("/")), NAME_MAX_BYTES - len(prefix))
    return prefix + base


def export_imagefolder(
    output: str, target: str, rows: str = "all", copy: bool = False, progress: Callable | None = None
) -> int:
    if os.path.exists(target):
        raise UsageError(f"--output {target} already exists; choose a new folder")
    dataset, _ = _open(output, rows)
    count = 0
    shards = _ShardIndex()
    with replaced_atomically(target, directory=True) as (tmp,):
        for row in _rows(dataset, rows, progress):
            folder = os.path.join(tmp, safe_name(row[TOPK_LABELS][0]))
            os.makedirs(folder, exist_ok=True)
            dest = os.path.join(folder, _file_name(row[PATH]))
            member = tar_member(row[PATH])
            if member:  # never a link: the member exists only inside its shard
                with open(dest, "wb") as f:
                    f.write(shards.read(*member))
            elif is_local(row[PATH]):
                source = from_text(os.path.abspath(row[PATH].removeprefix("file://")))
                if copy:
                    shutil.copyfile(source, dest)
                else:
                    os.symlink(source, dest)
            else:
                fs, source = filesystem(row[PATH])
                fs.get_file(source, dest)
            count += 1
    return count


class _ShardIndex:
    """Members' bytes read from their shards by name, each shard's headers read once.

    A member whose name leaves its shard is refused: only what the job labeled from the
    shard itself is exported (such members have error rows and are never exported)."""

    def __init__(self):
        self.members: dict[str, dict[str, tuple[int, int]]] = {}

    def read(self, shard: str, member: str) -> bytes:
        from ..core.storage import read_bytes_or_raise

        if member_escapes(member):
            raise UsageError(f"tar member {member!r} of {shard} leaves its shard; not exported")
        if shard not in self.members:
            table = list_tar_members(shard)
            self.members[shard] = {
                p[len(shard) + 1 :]: (o, n)
                for p, o, n in zip(
                    table.column(PATH).to_pylist(),
                    table.column(TAR_OFFSET).to_pylist(),
                    table.column(TAR_SIZE).to_pylist(),
                    strict=False,
                )
                if o is not None and o >= 0
            }
        if member not in self.members[shard]:
            raise UsageError(f"{shard} no longer holds {member!r}; the output is older than the shard")
        offset, size = self.members[shard][member]
        return read_bytes_or_raise(shard, offset, size)


def _cell(text: str) -> str:
    """Text a spreadsheet would run as a formula (=, +, -, @, tab, CR first) is quoted with '."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


CSV_HEADER = [PATH, "label", "prob", TOPK_LABELS, TOPK_PROBS, MARGIN, ENTROPY, NEEDS_REVIEW]


def export_csv(output: str, target: str, rows: str = "all", progress: Callable | None = None) -> int:
    dataset, _ = _open(output, rows)
    count = 0
    with replaced_atomically(target) as (tmp,):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            for row in _rows(dataset, rows, progress):
                writer.writerow(
                    [
                        _cell(row[PATH]),
                        _cell(row[TOPK_LABELS][0]),
                        f"{row[TOPK_PROBS][0]:.6f}",
                        _cell("|".join(row[TOPK_LABELS])),
                        "|".join(f"{p:.6f}" for p in row[TOPK_PROBS]),
                        "" if row.get(MARGIN) is None else f"{row[MARGIN]:.6f}",
                        "" if row.get(ENTROPY) is None else f"{row[ENTROPY]:.6f}",
                        "" if row.get(NEEDS_REVIEW) is None else str(row[NEEDS_REVIEW]).lower(),
                    ]
                )
                count += 1
    return count


def export(
    output: str,
    fmt: str,
    target: str,
    rows: str = "all",
    copy: bool = False,
    local_root: str | None = None,
    progress: Callable | None = None,
) -> int:
    """Export `output` as `fmt` to `target`; returns the rows exported."""
    checks.one_of("--format", fmt, FORMATS)
    checks.one_of("--rows", rows, ROWS)
    check_tool_target(target, "--output", folder=fmt == "imagefolder")
    if fmt == "label-studio":
        check_tool_target(config_path(target), "--output", folder=False)
        return export_label_studio(output, target, rows, local_root, progress)
    if fmt == "imagefolder":
        return export_imagefolder(output, target, rows, copy, progress)
    return export_csv(output, target, rows, progress)
