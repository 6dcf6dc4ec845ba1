"""Where an output may go: never inside a job output, whose readers would take its files
for rows (a job's own output included, nested in another's)."""

from __future__ import annotations

import os

from ..core.errors import UsageError
from .ownership import LEASE_FILE, RUN_FILE

__all__ = ["check_tool_target", "refuse_inside_job_output"]


def refuse_inside_job_output(target: str, what: str, *, strictly_inside: bool = False) -> None:
    """A tool's output (or a job's) never lands inside a job output: readers of that
    output would take its files for rows. Checks `target` and the folders above it for a
    job's run record or lease."""
    from ..core.storage import filesystem, scheme_of

    fs, path = filesystem(target)
    path = path.rstrip("/")
    folders = []
    folder = path if not strictly_inside else _parent(path)
    while folder and folder not in folders:
        folders.append(folder)
        folder = _parent(folder)
    if scheme_of(target) not in ("", "file", "local"):
        folders = folders[:8]  # object stores: the nearest prefixes are enough, each costs a request
    for folder in folders:
        for marker in (RUN_FILE, LEASE_FILE):
            try:
                found = fs.exists(f"{folder}/{marker}")
            except OSError:
                found = False
            if found:
                raise UsageError(
                    f"{what} {target} lies inside the job output {folder}, whose readers would take "
                    "it for rows; choose a path outside it"
                )


def check_tool_target(target: str, what: str, *, folder: bool) -> None:
    """Where a tool (report, export, neighbors) may write: outside every job output, and a
    file where a file is meant (not an existing folder)."""
    refuse_inside_job_output(target, what)
    if not folder and os.path.isdir(target):
        raise UsageError(f"{what} {target} is a folder; name the file to write, e.g. {os.path.join(target, 'out')}")


def _parent(path: str) -> str:
    parent = path.rsplit("/", 1)[0] if "/" in path.strip("/") else ("/" if path.startswith("/") else "")
    return "" if parent == path else parent
