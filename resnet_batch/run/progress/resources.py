"""What a job waiting for CPUs or GPUs waits for, in words, and whether an autoscaler is
adding nodes for it (RunWatch's resource check)."""

from __future__ import annotations

from .. import ray_compat


def nodes_being_added() -> int:
    """Nodes an autoscaler is launching now (0 without one, or when it cannot be asked)."""
    try:
        return ray_compat.pending_node_launches()
    except Exception:  # an older or unreachable autoscaler: say nothing about it
        return 0


def short_of(total: dict, free: dict, actors_placed: int, gpus: int, cpus: int = 1) -> str | None:
    """What the job waits for, in words, or None when it is not truly waiting; a model actor
    needs `cpus` CPUs and `gpus` GPUs. `actors_placed`: model actors that hold theirs (ready
    or still starting). Decode tasks are waiting only when the CPUs the model actors leave
    are none: CPUs held by the job's own decode tasks come free by themselves."""

    def have(kind: str) -> str:
        return f"{free.get(kind, 0):g} free of {total.get(kind, 0):g}"

    if not actors_placed:
        need = [(k, n) for k, n in (("CPU", cpus), ("GPU", gpus)) if n]
        short = [(k, n) for k, n in need if free.get(k, 0) < n]
        if short:
            what = " and ".join(f"{n} {k}" for k, n in short)
            return (
                f"waiting for {what} for a model actor; the cluster has {', '.join(f'{k} {have(k)}' for k, _ in short)}"
            )
    # Decode tasks need a CPU, also where the model actors hold none (or are not placed yet).
    if free.get("CPU", 0) < 1 and total.get("CPU", 0) - actors_placed * cpus < 1:
        held = f", {actors_placed * cpus} held by model actors" if cpus else ""
        return f"waiting for 1 CPU for the decode tasks; the cluster has CPU {have('CPU')}{held}"
    return None
