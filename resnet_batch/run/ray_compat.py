"""Every use of Ray's private and developer APIs, in one module, for the Ray it was written for.

Public API serves everywhere else. What is here has no public form in Ray 2.60: the blocks
a dataset yields by reference (for saving without pulling rows into the driver), the
metadata of a read task whose size is unknown, the processes of the node this process
started (to stop its monitor first), and two start-up hooks (Ray's SIGTERM handler, its
record of the command line). Under another Ray, importing this module warns once: these
are the first places to look when a job fails inside Ray.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import ray

RAY_SERIES = "2.60"  # the Ray release series this module was written and tested against

log = logging.getLogger(__name__)


def version_warning(version: str = ray.__version__) -> str | None:
    if version == RAY_SERIES or version.startswith(RAY_SERIES + "."):
        return None
    return (
        f"resnet-batch was written for Ray {RAY_SERIES} and this is Ray {version}: it reaches a few of Ray's "
        f"private APIs (resnet_batch/run/ray_compat.py); if a job fails inside Ray, install ray=={RAY_SERIES}.*"
    )


if version_warning():
    log.warning("%s", version_warning())


class DatasetRun:
    """A dataset running, its finished blocks by reference (the rows stay in the object store),
    and its executor, which `stop()` shuts down from any thread.

    A stop must end the executor before Ray shuts down: its threads would otherwise reach
    the core worker after the shutdown, which ends the whole process with exit status 1
    and no word (Ray Data 2.60 keeps the executor of `iter_internal_ref_bundles` to itself).
    """

    def __init__(self, ds: ray.data.Dataset):
        self.executor = ds._create_executor()
        self.bundles = ds._build_bundle_iterator(self.executor)

    def __iter__(self) -> Iterator[list[tuple[ray.ObjectRef, int, int | None]]]:
        """Per finished bundle: (block reference, rows, start offset or None) of each block."""
        for bundle in self.bundles:
            parts: list[tuple[ray.ObjectRef, int, int | None]] = []
            for entry, part in zip(bundle.blocks, bundle.slices or [None] * len(bundle.blocks), strict=True):
                rows = part.num_rows if part is not None else entry.metadata.num_rows
                ref = cast(ray.ObjectRef, entry.ref)  # Ray's two spellings of one type
                parts.append((ref, int(rows or 0), part.start_offset if part is not None else None))
            yield parts

    def stop(self, timeout_s: float = 30.0) -> None:
        """Shut the executor down and wait for its scheduling thread to end (its shutdown
        waits 2 s only, which a loaded node can outlast)."""
        self.executor.shutdown(force=True)
        if self.executor.is_alive():
            self.executor.join(timeout=timeout_s)


def streaming_task(ahead: int, **options: Any) -> Callable:
    """@ray.remote for a generator task whose items stream back, running at most `ahead`
    items ahead of its consumer (Ray's private backpressure option for generators)."""
    options.update(num_returns="streaming", _generator_backpressure_num_objects=ahead)
    return ray.remote(**options)


def unknown_block_metadata():
    """A read task's metadata when nothing is known ahead (rows, size and files unknown)."""
    from ray.data.block import BlockMetadata

    return BlockMetadata(None, None, None)


def started_node():
    """The node ray.init started in this process, or None (joined a cluster, or not started)."""
    return getattr(ray._private.worker, "_global_node", None)


def session_name(node: object) -> str | None:
    """The session of a node this process started (`session_...`, in its processes' command lines)."""
    return getattr(node, "session_name", None)


def node_processes(node: object, kind: str | None = None) -> list:
    """The subprocess handles of `node`'s processes (of one kind, e.g. "monitor")."""
    processes = getattr(node, "all_processes", {})
    infos = processes.get(kind, []) if kind else [i for kind_infos in processes.values() for i in kind_infos]
    return [info.process for info in infos]


@contextmanager
def without_sigterm_handler():
    """ray.init without the SIGTERM handler it installs in the main thread (the caller's stays)."""
    utils = ray._private.utils
    install = utils.set_sigterm_handler
    utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        utils.set_sigterm_handler = install


@contextmanager
def entrypoint_as_text():
    """ray.init records the command line, which it sends as UTF-8: bytes that are not UTF-8
    in it are given to Ray written as `\\xNN`."""
    utils = ray._private.utils
    entrypoint = utils.get_entrypoint_name
    utils.get_entrypoint_name = lambda: (
        entrypoint().encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    )
    try:
        yield
    finally:
        utils.get_entrypoint_name = entrypoint


def alive_node_addresses(gcs_address: str, timeout_s: float = 10.0) -> set[str]:
    """The addresses of the cluster's live nodes, asked of its GCS before joining it."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    nodes = GcsClient(address=gcs_address).get_all_node_info(timeout=timeout_s)
    return {info.node_manager_address for info in nodes.values() if info.state == 0}  # 0: ALIVE


def pending_node_launches() -> int:
    """Nodes an autoscaler is launching now, from its v2 SDK."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    return len(status.pending_launches) + len(status.pending_nodes)
