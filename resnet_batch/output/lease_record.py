"""What a lease file says, read by holders, takers and readers alike: who holds the output,
since when, whether the lease is stale, and all of it in words."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import TYPE_CHECKING

from ..core.errors import UsageError
from ..core.processes import alive

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

LEASE_FILE = "_resnet_batch.lock"
STALE_AFTER_S = 600.0
# How long a lease may go unrenewed before another job takes it over (seconds; renewed ten
# times as often): a cluster whose hosts can pause longer than this sets it higher.
STALE_VARIABLE = "RESNET_BATCH_LEASE_STALE_S"


def lease_state(fs: AbstractFileSystem, path: str) -> str | None:
    """For readers: None (no job holds the output), "held: WHO" (a job is writing it now),
    or "stale: WHO" (the job that held it died without releasing it)."""
    holder = read_lease(fs, f"{path.rstrip('/')}/{LEASE_FILE}")
    if holder is None:
        return None
    return f"{'stale' if is_stale(holder) else 'held'}: {describe_holder(holder)}"


def read_lease(fs: AbstractFileSystem, lease: str) -> dict | None:
    """The lease's record; None where there is none, {} where it is unreadable."""
    try:
        if hasattr(fs, "invalidate_cache"):
            fs.invalidate_cache(lease)
        return json.loads(fs.cat_file(lease) or b"{}")  # one request (an open is a HEAD, then a GET)
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # a half-written or foreign file: stale unless renewed (never, here)


def stale_after_s() -> float:
    """STALE_AFTER_S, or what RESNET_BATCH_LEASE_STALE_S says."""
    value = os.environ.get(STALE_VARIABLE, "")
    try:
        seconds = float(value) if value else STALE_AFTER_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"{STALE_VARIABLE}={value!r}: give the seconds a lease may go unrenewed, e.g. 600")
    return seconds


def is_stale(holder: dict) -> bool:
    """Its process is gone (same host), or it has not been renewed for STALE_AFTER_S."""
    renewed = holder.get("renewed")
    if not isinstance(renewed, (int, float)) or time.time() - renewed > stale_after_s():
        return True
    return (
        holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) and not alive(holder["pid"])
    )


def safe_token(holder: dict) -> str:
    """The stale lease's token as a file name (a damaged lease: a digest of what it holds)."""
    token = holder.get("token")
    if isinstance(token, str) and token.isalnum() and len(token) <= 64:
        return token
    import hashlib

    return hashlib.sha1(json.dumps(holder, sort_keys=True, default=str).encode()).hexdigest()


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "unreadable"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} since {since}"


def held_message(uri: str, holder: dict, lease: str) -> str:
    renewed = holder.get("renewed")
    when = ""
    if isinstance(renewed, (int, float)):  # a job that died (its host with it) stops renewing
        at = time.strftime("%H:%M:%S", time.localtime(renewed + stale_after_s()))
        when = f"once its lease is {stale_after_s():.0f} s unrenewed ({at}), or "
    return (
        f"--output {uri} is being written by another job ({describe_holder(holder)}); wait for it to end; "
        f"if that job is gone, the output is free {when}at once if you remove {lease}"
    )
