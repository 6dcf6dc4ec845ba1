"""Joining or starting Ray for a job, and stopping the local Ray a job started itself."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..config.plan import Cluster
from ..core.errors import UsageError, one_line, root_cause
from ..core.processes import alive, processes_naming
from ..core.signals import signals_deferred
from ..model.settings import cpu_has_native_bf16
from . import ray_compat

log = logging.getLogger(__name__)

# Ray's name for the autoscaler monitor among a local node's processes (ray_constants).
MONITOR_PROCESS = "monitor"


# Below this, a local Ray's session files and logs may not fit (its start then times out).
RAY_TEMP_FREE_BYTES = 256 * 2**20
JOIN_TIMEOUT_S = 15.0  # a cluster that does not answer within this is reported, not waited on


def join_or_start(address: str | None) -> bool:
    """Join the cluster named by `address` (or by RAY_ADDRESS, as Ray Jobs set it), else
    start a Ray of the job's own, whatever was left running on the machine; True when this
    call started it (and so must stop it).

    SIGINT and SIGTERM that arrive while Ray starts are held until it has started, then
    Ray is stopped and the signal delivered: raised half-way through ray.init, they would
    leave its processes orphaned. (Ray's own processes block SIGINT themselves, so a
    terminal's Ctrl-C reaches only this driver.)
    """
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target:
        _check_not_a_job_server(target)
    if ray.is_initialized():
        return False
    if target:
        _check_reachable(target)
        _check_on_a_node(target)
    started = False
    # ray.init would install a SIGTERM handler raising SystemExit wherever the signal lands:
    # inside Ray's start-up that can be swallowed, leave the logging lock held, or end the
    # start before Ray has recorded the processes it must stop. Kept out, the deferring
    # handler stays for the whole start.
    with signals_deferred() as caught, ray_compat.without_sigterm_handler(), ray_compat.entrypoint_as_text():
        try:
            if target:
                ray.init(address=target, logging_level=logging.WARNING)
            else:
                # "local" always starts a new Ray: a bare ray.init() would join the last one
                # started on this machine (another project's, or a dead one).
                # Without the dashboard: on a small machine its processes cost ~2 s of start-up.
                ray.init(address="local", logging_level=logging.WARNING, include_dashboard=False)
                started = True
        except Exception as exc:
            if ray.is_initialized():
                ray.shutdown()
            raise UsageError(
                f"cannot {'join the Ray cluster at ' + target if target else 'start a local Ray'}: "
                f"{type(exc).__name__}: {one_line(exc)}{_why_not_started(target)}"
            ) from None
        finally:
            if caught:  # stopped before Ray has finished starting: stop what it started
                _stop_now(started)
    if target:
        _check_workers_match(target)
    return started


@ray.remote(num_cpus=0)
def _worker_versions() -> tuple[str, str]:
    import sys

    from .. import __version__

    return __version__, sys.version.split()[0]


def _check_workers_match(target: str) -> None:
    """A joined cluster's workers run this driver's resnet-batch and Python, or the job is
    refused (Ray itself refuses another Ray version). A cluster too busy to answer within a
    minute is let through, with a warning."""
    import sys

    from .. import __version__

    try:
        theirs = ray.get(_worker_versions.remote(), timeout=60)
    except ray.exceptions.GetTimeoutError:
        log.warning("the cluster at %s did not say its resnet-batch version within 60 s", target)
        return
    except ray.exceptions.RayError as exc:
        ray.shutdown()
        cause = root_cause(exc)
        raise UsageError(
            f"the workers of the cluster at {target} cannot run resnet-batch: "
            f"{type(cause).__name__}: {one_line(cause)}; install it there, "
            "or use resnet-batch submit, which ships it with the job"
        ) from None
    ours = (__version__, sys.version.split()[0])
    if tuple(theirs) != ours:
        ray.shutdown()
        raise UsageError(
            f"the workers of the cluster at {target} run resnet-batch {theirs[0]} on Python {theirs[1]}, "
            f"this driver {ours[0]} on Python {ours[1]}; install the same there, or use "
            "resnet-batch submit, which ships this one with the job"
        )


def cluster(ask_bf16: bool = True) -> Cluster:
    """What the joined or started cluster offers the model stage, read once. Without
    `ask_bf16` (only "auto" precision on CPUs needs it) the nodes are not asked, and
    `cpu_bf16` is False."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpu_nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]
    cpus_per_node = int(min(n["Resources"]["CPU"] for n in cpu_nodes)) if cpu_nodes else 1
    gpu_nodes = sum(1 for n in ray.nodes() if n.get("Alive") and n["Resources"].get("GPU", 0) >= 1)
    memory = int(min(n["Resources"].get("memory", 0) for n in cpu_nodes)) if cpu_nodes else 0
    bf16 = ask_bf16 and _all_have_native_bf16(cpu_nodes)
    return Cluster(gpus, len(cpu_nodes), cpus_per_node, bf16, gpu_nodes, memory_per_node=memory)


def _all_have_native_bf16(nodes: list[dict]) -> bool:
    """Each node answers for its own CPU (a driver outside the cluster cannot know)."""
    if not nodes:
        return False
    here = ray.util.get_node_ip_address()
    if all(n["NodeManagerAddress"] == here for n in nodes):
        return cpu_has_native_bf16()
    probe = ray.remote(num_cpus=0)(cpu_has_native_bf16)
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        for n in nodes
    ]
    return all(ray.get(refs, timeout=60))


def _check_reachable(address: str) -> None:
    """A host:port that does not accept connections within JOIN_TIMEOUT_S fails with one
    line (ray.init would retry for minutes, without a word)."""
    if address == "auto":
        address = _current_cluster()
    if "://" in address or ":" not in address:
        return  # named addresses: ray.init's own checks
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except ValueError:
            raise UsageError(f"invalid Ray address {address!r}; expected HOST:PORT or auto") from None
        except OSError as exc:
            if time.monotonic() > deadline:
                raise UsageError(
                    f"no Ray cluster answers at {address} ({one_line(exc)}) after {JOIN_TIMEOUT_S:.0f} s; "
                    "check --address (or RAY_ADDRESS), or give neither to start a local Ray"
                ) from None
            time.sleep(0.5)


def _check_on_a_node(address: str) -> None:
    """A Ray driver runs on a node of its cluster (Ray's core worker, finding no node here,
    ends the process without a word): from elsewhere the way in is the job server."""
    if address == "auto":
        return  # a cluster this machine runs
    try:
        nodes = ray_compat.alive_node_addresses(address)
    except Exception as exc:  # an older head, or a token it wants: ray.init says what is wrong
        log.debug("could not list the nodes of %s: %s", address, one_line(exc))
        return
    if nodes & {ray.util.get_node_ip_address(), "127.0.0.1"}:  # the node ray.init would attach to
        return
    head = address.rpartition(":")[0]
    raise UsageError(
        f"this machine runs no node of the Ray cluster at {address} (its nodes: {', '.join(sorted(nodes))}), "
        f"and a Ray driver must run on one; from here, submit the job to the cluster's job server: "
        f"resnet-batch submit --address http://{head}:8265 -- label ...; Ray Client (ray://{head}:10001) "
        "cannot run label"
    )


def _check_not_a_job_server(address: str) -> None:
    if address.startswith(("http://", "https://")):
        raise UsageError(
            f"--address {address} is a job server (for `resnet-batch submit` and `jobs`); a job run "
            "here joins a cluster at HOST:6379 or auto, or submits to that server: "
            "resnet-batch submit --address URL -- label ..."
        )
    if address.startswith("ray://"):
        head = address.removeprefix("ray://").rpartition(":")[0] or "HEAD"
        raise UsageError(
            f"--address {address}: Ray Client cannot run label (its driver reads Ray Data's blocks by "
            "reference and must run on a node of the cluster); from off the cluster, submit the job to "
            f"the cluster's job server: resnet-batch submit --address http://{head}:8265 -- label ..."
        )


def _why_not_started(target: str | None) -> str:
    """What the usual causes of a failed start or join point at, where they apply here."""
    if target and os.environ.get("RAY_AUTH_MODE") != "token":
        return (
            "; if the cluster requires a token (RAY_AUTH_MODE=token on its nodes), set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) here too"
        )
    if not target:
        root = ray_temp_root()
        try:
            free = shutil.disk_usage(root).free
        except OSError:
            return ""
        if free < RAY_TEMP_FREE_BYTES:
            return (
                f"; Ray's temporary folder {root} has {free // 2**20} MiB free: make room there, or point "
                "RAY_TMPDIR at a disk that has it"
            )
    return ""


def ray_temp_root() -> str:
    """Where a local Ray keeps its sessions: RAY_TMPDIR's, else the system temporary folder's `ray`."""
    import tempfile

    return os.path.join(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray")


def _current_cluster() -> str:
    """The address `auto` stands for: the last cluster `ray start` recorded on this machine."""
    try:
        with open(os.path.join(ray_temp_root(), "ray_current_cluster")) as f:
            return f.read().strip()
    except OSError:
        raise UsageError("--address auto: no Ray cluster was started on this machine (ray start --head)") from None


def stop() -> None:
    """ray.shutdown(), without the second it spends on the autoscaler monitor.

    Ray stops a local node's processes one after the other, the GCS before the monitor;
    the monitor's SIGTERM handler then tries to report its end to the GCS that is gone and
    is killed a second later. A job's own local Ray has nothing for the autoscaler to wind
    down, so the monitor is killed first (BENCHMARKS.md, `bench/startup.py`). A joined cluster is
    only disconnected from.
    """
    with signals_deferred():
        _stop_now(True)


def disconnect() -> None:
    """Leave a cluster this process joined (its nodes run on)."""
    with signals_deferred():
        ray.shutdown()


def _stop_now(started: bool) -> None:
    node = ray_compat.started_node() if started else None  # None when Ray was joined
    for process in ray_compat.node_processes(node, MONITOR_PROCESS):
        process.kill()
    ray.shutdown()


def own_session() -> str | None:
    """The session of the local Ray this process started (None when it joined one)."""
    node = ray_compat.started_node()
    return ray_compat.session_name(node) if node is not None else None


def end_leftovers(stale: dict) -> None:
    """A dead job's own Ray, which outlives its driver for a minute or so, ended: the
    processes of its session (recorded in its lease: those whose command line names it, or that
    hold a file of its folder open, as its agents and workers, which rename themselves, do), on this host and
    only when the job's process is gone."""
    session = stale.get("ray_session")
    if not session or stale.get("host") != socket.gethostname() or alive(stale.get("pid")):
        return
    pids = processes_naming(f"/{session}/", str(session))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    if pids:
        log.warning(
            "ended %d processes of the Ray the dead job (pid %s) left running (%s)",
            len(pids),
            stale.get("pid"),
            session,
        )
