"""What a job waiting for CPUs or GPUs waits for, in words, and whether an autoscaler is
adding nodes for it (RunWatch's resource check)."""

from __future__ import annotations

import ray


def nodes_being_added() -> int:
    """Nodes an autoscaler is launching now (0 without one, or when it cannot be asked)."""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
        return len(status.pending_launches) + len(status.pending_nodes)
    except Exception:  # an older or unreachable autoscaler: say nothing about it
        return 0


def short_of(total: dict, free: dict, actors_up: int, gpus: int, cpus: int = 1) -> str | None:
    """What the job waits for, in words, or None when the cluster has room for it; a model
    actor needs `cpus` CPUs and `gpus` GPUs."""
    def have(kind: str) -> str:
        return f"{free.get(kind, 0):g} free of {total.get(kind, 0):g}"

    if not actors_up:
        need = [(k, n) for k, n in (("CPU", cpus), ("GPU", gpus)) if n]
        short = [(k, n) for k, n in need if free.get(k, 0) < n]
        if short:
            what = " and ".join(f"{n} {k}" for k, n in short)
            return f"waiting for {what} for a model actor; the cluster has {', '.join(f'{k} {have(k)}' for k, _ in short)}"
        return None
    if free.get("CPU", 0) < 1:
        held = f", {actors_up * cpus} held by model actors" if cpus else ""
        return f"waiting for 1 CPU for the decode tasks; the cluster has CPU {have('CPU')}{held}"
    return None
