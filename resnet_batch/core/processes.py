"""This host's processes, read from /proc (Linux): whether one is alive, and which ones name
something in their command line or in the files they hold open."""

from __future__ import annotations

import contextlib
import os


def alive(pid: object) -> bool:
    """A process of that id runs here (a zombie is gone, whatever kill(0) says)."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def processes_naming(in_open_files: str, in_command_line: str) -> list[int]:
    """The live processes (this one aside) whose command line holds `in_command_line`, or
    that hold open a file whose path holds `in_open_files`."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit() and int(entry) != os.getpid() and alive(int(entry)):
            if _names(entry, in_open_files, in_command_line):
                found.append(int(entry))
    return found


def _names(pid: str, in_open_files: str, in_command_line: str) -> bool:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if in_command_line.encode() in f.read():
                return True
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if in_open_files in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    return True
    return False
