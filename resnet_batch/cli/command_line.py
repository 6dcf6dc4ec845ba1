"""Command lines as words: the one that finishes an interrupted run, a shell's quoting of
any name, and `submit ... -- label ...` cut in two."""

from __future__ import annotations

import json
import os
import shlex


def resume_command(argv: list[str]) -> str:
    """The command line that finishes an interrupted run: the same one, with --mode resume."""
    args, i = [], 0
    while i < len(argv):
        if argv[i] == "--mode":
            i += 2
            continue
        if not argv[i].startswith("--mode="):
            args.append(argv[i])
        i += 1
    # Before a `--`, after which every word is an INPUT.
    at = args.index("--") if "--" in args else len(args)
    args[at:at] = ["--mode", "resume"]
    server = submitted_from()
    if server:  # a job on a cluster is resumed there, as it was started
        return shell_join(["resnet-batch", "submit", "--address", server, "--", *args])
    return shell_join(["resnet-batch", *args])


def shell_join(words: list[str]) -> str:
    """A command line a shell runs as `words`: a word whose bytes are not UTF-8 (a name's
    undecodable bytes, carried as surrogates) in bash's $'...' quoting, byte for byte."""
    return " ".join(shlex.quote(w) if w.isprintable() and _utf8(w) else _ansi_c(w) for w in words)


def _utf8(word: str) -> bool:
    try:
        word.encode()
        return True
    except UnicodeEncodeError:
        return False


def _ansi_c(word: str) -> str:
    raw = os.fsencode(word)
    return "$'" + "".join(chr(b) if 32 <= b < 127 and b not in b"'\\" else f"\\x{b:02x}" for b in raw) + "'"


def split_job_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """submit ... -- label ...: what follows `--` is the submitted job's command line. For
    every other command `--` keeps its usual meaning (the rest are INPUTs, even if they
    start with a dash), which argparse gives it."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "submit" and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def submitted_from() -> str | None:
    """In a job `submit` sent: the job server it was sent to (None elsewhere); Ray hands
    the job its metadata in RAY_JOB_CONFIG_JSON_ENV_VAR."""
    try:
        metadata = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "")).get("metadata") or {}
    except (ValueError, AttributeError):
        return None
    return metadata.get("job_server") if metadata.get("tool") == "resnet-batch" else None
