"""One writer per job output.

A job holds a lease on its output for as long as it may write there: the file
`_resnet_batch.lock`, made by a conditional create (a hard link on local disks, S3's
If-None-Match, GCS's ifGenerationMatch=0, Azure's If-None-Match) and read back to confirm the job's own
token is the one there. The holder renews it while it runs; a lease is stale, and
taken over, when its process is gone (same host) or it has not been renewed for
STALE_AFTER_S seconds (another host). Readers skip it, as they skip every `_` file.

A takeover is atomic: of the jobs that find the same stale lease, only the one that
creates `_resnet_batch.lock.takeover-TOKEN` (TOKEN: the stale lease's) may remove it, with
the same conditional create, so two jobs can never both hold the output; it removes the
marker once the stale lease is gone.

A lease is also a fence. A job paused past STALE_AFTER_S (SIGSTOP, a closed laptop, a
partitioned host) wakes up believing it still holds the output. So each writer confirms,
before each file of its becomes visible, that the lease still holds its token (`Fence`),
and its renewer never rewrites a lease that is no longer its own. A check and the write
after it are two steps, so a part is also marked with its writer's fence (the first 16 hex
digits of its token, in its name), and the job that takes over seals the stale writer's
parts as it found them (`_resnet_batch.fenced-MARK.json`, before it removes the lease): a
part of that mark that is not in the seal was made visible after the takeover, and is
never counted (writer.OutputDir sets it aside).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.errors import LeaseLost, UsageError, cannot, one_line
from ..core.storage import is_store_error, modified_at
from .lease_record import LEASE_FILE, describe_holder, held_message, is_stale, read_lease, safe_token, stale_after_s

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


__all__ = ["FENCE_PREFIX", "LEASE_FILE", "RUN_FILE", "Fence", "OutputLease", "read_seals"]

log = logging.getLogger(__name__)

RUN_FILE = "_resnet_batch.json"
RENEW_EVERY_S = 60.0
TAKEOVER_S = 60.0  # a takeover marker older than this was left by a job that died taking over
FENCE_PREFIX = "_resnet_batch.fenced-"  # + MARK.json: the parts of a writer whose lease was taken over
MARK_DIGITS = 16


@dataclass(frozen=True)
class Fence:
    """What a writer carries into its write tasks: the lease that must still hold its token
    when one of its files becomes visible, and the mark its part files bear."""

    lease: str
    token: str
    uri: str

    @property
    def mark(self) -> str:
        return self.token[:MARK_DIGITS]

    def confirm(self, fs: AbstractFileSystem) -> None:
        """Return if the lease is still this writer's; else raise LeaseLost."""
        holder = read_lease(fs, self.lease)
        if not holder or holder.get("token") != self.token:
            raise LeaseLost(self.uri, describe_holder(holder) if holder else None)


Seal = Callable[[str], list[str]]  # a stale writer's mark -> the names of its parts there now


class OutputLease:
    """`with OutputLease(fs, path, uri):` the output is this job's until the block ends."""

    def __init__(
        self,
        fs: AbstractFileSystem,
        path: str,
        uri: str,
        local: bool,
        seal: Seal,
        on_takeover: Callable[[dict], None] | None = None,
    ):
        self.fs, self.path, self.uri, self.local = fs, path, uri, local
        self.on_takeover = on_takeover  # told of each stale lease this job removed (what it recorded)
        self.notes: dict = {}  # what the holder adds to its record (e.g. the Ray it started)
        self.lease = f"{path.rstrip('/')}/{LEASE_FILE}"
        self.token = uuid.uuid4().hex
        self.fence = Fence(self.lease, self.token, uri)
        self.seal = seal
        self.lost: str | None = None  # why the renewer found the lease no longer this job's
        self.started = time.time()
        self.created_dir = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps(
            {
                "token": self.token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": self.started,
                "renewed": time.time(),
                **self.notes,
            }
        ).encode()

    def __enter__(self) -> OutputLease:
        try:
            if self.local and not os.path.isdir(self.path):
                os.makedirs(self.path)
                self.created_dir = True
            for _ in range(3):  # again after a stale lease is removed, by this job or a rival
                if self._create(self.lease):
                    break
                holder = self._read()
                if holder and not is_stale(holder):
                    raise UsageError(held_message(self.uri, holder, self.lease))
                self._take_over(holder)
            else:
                raise UsageError(f"--output {self.uri} is being claimed by another job at the same moment; retry")
            holder = self._read()
            if not holder or holder.get("token") != self.token:  # a store without conditional creates
                raise UsageError(held_message(self.uri, holder or {}, self.lease))
        except BaseException as exc:
            self._cleanup_dir()
            if isinstance(exc, Exception) and is_store_error(exc):  # a missing bucket, no permission
                raise cannot(f"write to --output {self.uri}", exc) from None
            raise
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="resnet-batch-lease")
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join(timeout=5)
        try:
            holder = self._read()
            if holder and holder.get("token") == self.token:
                self._remove()
        except Exception as error:  # best effort: the lease goes stale if it cannot be removed
            log.warning("could not release the lease %s: %s", self.lease, one_line(error))
        self._cleanup_dir()

    def _take_over(self, stale: dict | None) -> None:
        """Remove the stale lease `stale` if this job wins the right to (else a rival has it).

        Only the job that creates the marker removes the lease, and only if it still holds
        `stale`: a token is never reused, so once gone it cannot be removed twice.
        """
        if stale is None:
            return  # gone already: create again
        marker = f"{self.lease}.takeover-{safe_token(stale)}"
        if not self._create(marker):
            if self._age_s(marker) > TAKEOVER_S:  # its taker died half-way
                self._remove(marker)
            return  # a rival is taking it over; the next look at the lease says who holds it
        try:
            if self._read() == stale:
                log.warning("taking over the stale lease of %s (%s)", self.uri, describe_holder(stale))
                self._seal_parts_of(stale)
                self._remove()
                if self.on_takeover:
                    self.on_takeover(stale)
        finally:
            self._remove(marker)

    def note(self, **fields: str) -> None:
        """Add `fields` to this job's lease record now (and at each renewal)."""
        self.notes.update(fields)
        self.fence.confirm(self.fs)
        self._write_record()

    def _seal_parts_of(self, stale: dict) -> None:
        """The stale writer's parts as they are now, recorded before its lease goes: any
        other part of its mark was made visible after this, and is never counted."""
        mark = safe_token(stale)[:MARK_DIGITS]
        record = {"mark": mark, "token": stale.get("token"), "by": self.token, "at": time.time()}
        record["parts"] = sorted(self.seal(mark))
        with self.fs.open(f"{self.path.rstrip('/')}/{FENCE_PREFIX}{mark}.json", "wb") as f:
            f.write(json.dumps(record).encode())

    def _age_s(self, path: str) -> float:
        try:
            modified = modified_at(self.fs, path)
        except FileNotFoundError:
            return 0.0
        return time.time() - modified if modified is not None else 0.0

    def _create(self, path: str) -> bool:
        """Create `path` holding this job's record, only if it does not exist; False if it does."""
        try:
            if self.local:
                return _create_whole(path, self._record())
            # Each store's conditional create: S3 If-None-Match, GCS ifGenerationMatch=0, Azure
            # overwrite=False (gcsfs's "xb" open sends no condition for a small file).
            self.fs.pipe_file(path, self._record(), mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if "PreconditionFailed" in str(exc) or "412" in str(exc):  # S3's answer to If-None-Match
                return False
            raise

    def _read(self) -> dict | None:
        return read_lease(self.fs, self.lease)

    def _remove(self, path: str | None = None) -> None:
        try:
            self.fs.rm(path or self.lease)
        except FileNotFoundError:
            pass

    def _renew(self) -> None:
        while not self._stop.wait(min(RENEW_EVERY_S, stale_after_s() / 10)):
            try:
                self.fence.confirm(self.fs)  # never rewrite a lease that another job now holds
            except LeaseLost as lost:
                self.lost = str(lost)  # the job's next write stops it, with this line
                log.debug("%s", lost)
                return
            except Exception as exc:  # the store not answering (a connection error of any client's)
                log.warning("could not read the lease %s: %s", self.lease, one_line(exc))
                continue
            try:
                self._write_record()
            except Exception as exc:
                log.warning("could not renew the lease %s: %s", self.lease, one_line(exc))

    def _write_record(self) -> None:
        if self.local:  # replaced whole: a reader never sees it half-written (that reads as stale)
            tmp = _beside(self.lease)
            with open(tmp, "wb") as f:
                f.write(self._record())
            os.replace(tmp, self.lease)
            return
        with self.fs.open(self.lease, "wb") as f:  # one PUT: whole or not at all
            f.write(self._record())

    def _cleanup_dir(self) -> None:
        """A folder this job made for its lease, and left empty, is removed again."""
        if self.created_dir:
            try:
                os.rmdir(self.path)
            except OSError:
                pass


def read_seals(fs: AbstractFileSystem, path: str, names: list[str]) -> dict[str, frozenset[str]]:
    """The seals among `names` (an output's file names): a stale writer's mark -> its parts
    as the job that took over found them."""
    seals = {}
    for name in names:
        if not (name.startswith(FENCE_PREFIX) and name.endswith(".json")):
            continue
        try:
            with fs.open(f"{path.rstrip('/')}/{name}", "rb") as f:
                record = json.loads(f.read())
            seals[str(record["mark"])] = frozenset(record["parts"])
        except (ValueError, KeyError, TypeError, FileNotFoundError):
            log.warning("the fence record %s/%s is damaged; it is ignored", path.rstrip("/"), name)
    return seals


def _beside(path: str) -> str:
    """A temporary name beside `path`, named as ours (the lease file's name, a suffix)."""
    return f"{path}.new-{uuid.uuid4().hex}"


def _create_whole(path: str, data: bytes) -> bool:
    """Create the local file `path` holding `data`, only if it does not exist; False if it
    does. Written beside it, then hard-linked into place (a link never replaces a file):
    no other job ever reads it empty or half-written, which would read as a stale lease."""
    tmp = _beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
