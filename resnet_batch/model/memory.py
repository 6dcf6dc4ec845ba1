"""What a run's workers hold in memory, planned before any work: refused up front where it
cannot fit, shown by `--dry-run`.

- A CPU model actor: its calls at once, each a batch of float32 inputs and the forward's
  activations (`registry.activation_bytes`), plus the network's weights.
- A decode task: the images it decodes at once (bounded by `limits.DECODE_TASK_BYTES`) and
  the block of uint8 crops it hands on; its Ray `memory` request, so that a node runs no
  more decode tasks than its memory holds.
A GPU actor's batch lives on the GPU, where an out-of-memory batch is split and retried
(model/network.py); only its host side is counted here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import UsageError
from ..data.limits import DECODE_TASK_BYTES
from .registry import activation_bytes

GiB = 2**30
MODEL_BYTES = GiB // 2  # the network's weights, torch's own and the actor's Python: about, for a ResNet-152


@dataclass(frozen=True)
class MemoryPlan:
    per_image: int  # a CPU forward's bytes per image (0 on GPUs)
    actor: int  # one model actor, at its peak
    decode_task: int  # one decode task, at its peak (its Ray memory request)
    node: int  # what Ray may give its workers on the smallest node (0: unknown)
    actors_per_node: int

    def line(self) -> str:
        node = f"; a node gives Ray's workers {self.node / GiB:.1f} GiB" if self.node else ""
        return (
            f"  memory: each model actor ~{self.actor / GiB:.1f} GiB, each decode task ~{self.decode_task / GiB:.1f} "
            f"GiB{node}"
        )


def plan_memory(
    model: str,
    precision: str,
    pixels: int,
    batch: int,
    calls: int,
    block_rows: int,
    on_gpu: bool,
    node_bytes: int,
    actors_per_node: int,
) -> MemoryPlan:
    """The plan's memory; `pixels`: the largest input the model sees (crop, or --crop none's
    padded resize); raises UsageError, saying what to change, where it cannot fit."""
    per_image = 0 if on_gpu else activation_bytes(model, pixels, precision) + 4 * 3 * pixels
    actor = MODEL_BYTES + calls * batch * per_image
    decode_task = DECODE_TASK_BYTES + block_rows * 3 * pixels
    plan = MemoryPlan(per_image, actor, decode_task, node_bytes, actors_per_node)
    if node_bytes:
        _check(plan, model, batch, calls, pixels)
    return plan


def _check(plan: MemoryPlan, model: str, batch: int, calls: int, pixels: int) -> None:
    room = plan.node // max(1, plan.actors_per_node) - plan.decode_task
    if plan.actor > room and plan.per_image:
        fits = max(0, (room - MODEL_BYTES) // (calls * plan.per_image))
        change = (
            f"use --batch-size {fits} or less"
            if fits
            else "use a smaller --resize (with --crop none, images are resized up to R x 2R)"
        )
        raise UsageError(
            f"--batch-size {batch} cannot fit: {calls} calls at once of {batch} {model} images "
            f"({_size(pixels)}, ~{plan.per_image / 2**20:.0f} MiB each) need ~{plan.actor / GiB:.1f} GiB in "
            f"each model actor, and a node gives it ~{max(room, 0) / GiB:.1f} GiB; {change}"
        )
    if plan.decode_task > plan.node:
        raise UsageError(
            f"a decode task's block ({_size(pixels)} per image) needs ~{plan.decode_task / GiB:.1f} GiB, more "
            f"than a node's {plan.node / GiB:.1f} GiB: use a smaller --resize or --batch-size"
        )


def _size(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} M pixels" if pixels >= 10**6 else f"{pixels} pixels"
