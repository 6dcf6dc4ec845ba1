"""The model stage as the driver declares it: what a model actor runs with, and the
precision "auto" stands for on a device. Torch-free, so the driver can decide all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.preprocessing import WholeImage
from .registry import POOLED
from .weights import ResolvedWeights

# glibc maps each large block afresh and unmaps it on free, so every forward pass would
# page-fault its activations in again: the resnet18 forward on 2 CPU cores runs 1.4-1.5x
# as fast without that (BENCHMARKS.md, bench/forward.py), at about the same RSS. The model
# actor reallocates the same sizes every batch: one arena (Ray runs the model on a thread of
# its own, whose arena would map large blocks anyway), never mmap, never trim. Environment, not mallopt(): it must hold
# before any thread of the process has an arena.
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


@dataclass(frozen=True)
class InferenceSettings:
    weights: ResolvedWeights
    top_k: int = 5
    features: tuple[str, ...] = (POOLED,)  # pooled (the `embedding` column) and/or c2..c5, pooled
    spatial: str | None = None  # c4 or c5: that stage's whole map, float16
    whole_image: WholeImage | None = None  # --crop none: images padded to a few shapes, resized sizes given
    review_below: float | None = None  # needs_review: top-1 probability under this
    embedding_dtype: str = "float32"
    device: str = "auto"
    precision: str = "auto"
    # torch intra-op threads per call. CPU actors run one single-threaded call per core at
    # once: ~12% more images/s than one call on all cores, whose OpenMP threads wait for
    # each other at every layer (bench/bench.py --calls 1 --threads 2).
    threads: int = 1
    channels_last: bool = True
    compile: bool = False
    warmup_batch: int = 1  # on a GPU, the batch size cuDNN is tuned for before the first block
    # The JPEG decoder where the actor decodes JPEGs (--decode gpu): "auto" or one of
    # device/decoders.GPU_DECODERS; None: JPEGs arrive decoded.
    gpu_decoder: str | None = None


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX), where bf16 is fast."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    if precision != "auto":
        return precision
    if device == "cuda":
        import torch  # only asked on a GPU actor, which has it imported: a GPU's kind decides

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"
