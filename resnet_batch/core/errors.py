"""Exceptions that carry a one-line message meant for the user."""

from __future__ import annotations

import re
import signal
from typing import ClassVar


class UsageError(ValueError):
    """A bad argument or configuration; the CLI prints it as one line and exits 2."""


class ResourcesUnavailable(UsageError):
    """The cluster lacked what the job needs for longer than --wait-for-resources."""


class WeightsUnavailableError(RuntimeError):
    """Weights could not be fetched or loaded; the message says how to fix it."""


class ModelStartError(RuntimeError):
    """A model actor could not start: what its constructor raised, as one line."""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ImageError(Exception):
    """One image's failure (its row's `error`, never the job's); `category` is the stable
    reason prefix in the `error` column."""

    def __init__(self, category: str, detail: str):
        super().__init__(f"{category}: {detail}")
        self.category = category


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (terminal colour codes removed), cut to `limit`
    characters, for errors and rows."""
    return " ".join(_ANSI.sub("", str(exc)).split())[:limit]


def cannot(action: str, exc: BaseException) -> UsageError:
    """The one wording of a storage failure the user can act on: "cannot ACTION: Error: why"."""
    return UsageError(f"cannot {action}: {type(exc).__name__}: {one_line(exc)}")


def root_cause(exc: BaseException) -> BaseException:
    """The error a remote task or actor raised, out of Ray's wrappers (whose own message is
    a traceback), e.g. the OSError "No space left on device" of a write task."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)  # RayTaskError / RayActorError keep the original here
        if not isinstance(inner, BaseException):
            inner = exc.__cause__ if type(exc).__module__.startswith("ray.") else None
        if not isinstance(inner, BaseException):
            return exc
        exc = inner
    return exc


class Interrupted(KeyboardInterrupt):
    """The job was stopped by a signal (SIGINT/SIGTERM) after saving what it had done.

    A KeyboardInterrupt, so that no `except Exception` swallows it, and so that a signal
    handled while the driver waits in ray.get/ray.wait stops the wait at once: Ray's wait
    loop passes a KeyboardInterrupt on (as a bare one, without the signal), and any other
    exception raised there becomes a SystemError when the wait ends, the stop lost.
    `processed` and `saved` are filled in by the pipeline once the finished work is on disk.
    """

    last_signum: ClassVar[int] = signal.SIGINT  # what a bare KeyboardInterrupt stands for

    def __init__(self, signum: int, processed: int = 0, saved: int = 0):
        super().__init__(signum)
        self.signum, self.processed, self.saved = signum, processed, saved

    @classmethod
    def of(cls, exc: KeyboardInterrupt) -> Interrupted:
        """`exc` itself, or the stop a bare KeyboardInterrupt (Ray's, in place of ours) stands for."""
        return exc if isinstance(exc, cls) else cls(cls.last_signum)


class LeaseLost(Exception):
    """This job no longer holds its output's lease (another job took it over while this one
    was paused or cut off): nothing it writes from now on may become part of the output."""

    def __init__(self, uri: str, holder: str | None):
        now = f"another job took it over ({holder})" if holder else "its lease was removed"
        super().__init__(
            f"--output {uri} is no longer this job's: {now} while this job was paused or cut off. "
            "This job stops here; the rows it saved before are kept, and the job holding the output "
            "(or a later --mode resume) labels the rest"
        )
        self.uri, self.holder = uri, holder

    def __reduce__(self):  # raised in write tasks: pickled with its own arguments
        return type(self), (self.uri, self.holder)


class SaveFailed(Exception):
    """Finished rows could not be written (a full disk, a lost bucket); the output holds
    `on_disk` rows (None: the output itself is gone), and `--mode resume` carries on from them.
    `unreachable`: the store stopped answering, and `on_disk` counts what this run saved."""

    def __init__(self, cause: BaseException, on_disk: int | None, *, unreachable: bool = False):
        super().__init__(one_line(cause))
        self.cause, self.on_disk, self.unreachable = cause, on_disk, unreachable


def require(
    module: str, extra: str, needed_for: str = "this", error: type[Exception] = UsageError, otherwise: str = ""
):
    """Import an optional dependency, or fail with one line saying how to install it (the
    one wording of every "missing extra" error); `otherwise` adds another way out."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise error(
            f"{needed_for} needs the {module} package: pip install 'resnet-batch[{extra}]'"
            + (f", {otherwise}" if otherwise else "")
        ) from None
