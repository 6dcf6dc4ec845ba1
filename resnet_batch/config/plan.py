"""How a label run executes: one frozen ExecutionPlan, decided before any work starts.

`make_plan` is a pure function of the job's arguments, its resolved weights and what the
cluster offers (`Cluster`, read from Ray once). The pipeline only wires the plan; benches
and tests build plans directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.errors import UsageError
from ..data.limits import DEFAULT_MAX_BYTES
from ..data.preprocessing import DEVICE_FILTERS
from ..model.memory import MemoryPlan, plan_memory
from ..model.registry import NULL_MODEL
from ..model.settings import InferenceSettings, cpu_has_native_bf16
from .description import whole_image
from .label_config import ExecutionOptions, LabelConfig

if TYPE_CHECKING:
    from ..model.weights import ResolvedWeights


# Two calls at once per GPU actor, so one batch's host work and copies overlap another's
# compute. CPU actors run one single-threaded call per core instead (InferenceSettings.threads).
CONCURRENT_CALLS_PER_GPU_ACTOR = 2
GPU_ACTOR_THREADS = 4  # torch threads of each GPU actor call: host-side work only
BLOCKS_PER_BATCH = 4  # input block size, in batches: enough work per decode task
GPU_BATCH = 256  # fills a GPU
CPU_BATCH = {"bf16": 64, "fp32": 32}  # where each precision peaks on CPUs (BENCHMARKS.md)
REMOTE_IO_THREADS = 16  # file fetches at once per decode task, from an object store


@dataclass(frozen=True)
class Cluster:
    """What the cluster offers the model stage."""

    gpus: int
    cpu_nodes: int  # alive nodes with at least one CPU
    cpus_per_node: int  # the fewest CPUs of those nodes
    cpu_bf16: bool  # every one of those nodes has native bf16 instructions
    gpu_nodes: int = 0  # alive nodes with at least one GPU
    memory_per_node: int = 0  # bytes Ray may give workers on the smallest CPU node (0: unknown)

    def describe(self) -> str:
        cpus = (
            f"{self.cpu_nodes} node{'s' if self.cpu_nodes != 1 else ''} with CPUs ({self.cpus_per_node} or more each)"
        )
        if not self.gpus:
            return cpus
        nodes = max(1, self.gpu_nodes)
        return f"{self.gpus} GPU{'s' if self.gpus != 1 else ''} on {nodes} node{'s' if nodes != 1 else ''}, {cpus}"

    @classmethod
    def here(cls, cpus: int, gpus: int = 0) -> Cluster:
        """This machine as a one-node cluster."""
        return cls(gpus, 1, cpus, cpu_has_native_bf16())


@dataclass(frozen=True)
class PoolNeeds:
    """What the model actors need of the cluster, and how long the job may wait for it."""

    actors: int
    gpus_per_actor: int
    cpus_per_actor: int
    wait_limit_s: float


@dataclass(frozen=True)
class ExecutionPlan:
    actors: int
    gpus_per_actor: int
    calls_per_actor: int  # calls one actor runs at once, each on a thread of its own
    threads_per_call: int  # torch intra-op threads of each call
    cpus_per_actor: int  # CPUs each model actor holds (the null model, which computes nothing, holds none)
    batch_size: int
    block_rows: int  # rows per decode task
    cpu_decode_share: float | None  # with decode_on_device: the share CPU tasks decode all the same (None: adapts)
    io_threads: int
    max_pixels: int
    inference: InferenceSettings  # what each model actor runs with: its device, precision, geometry
    read_tasks: int = 1  # read tasks at once (listing, hashing, claiming: CPU that decoding needs too)
    decode_cores_per_actor: int = 1  # the cores a model actor's share of CPU decoding runs on
    cluster: Cluster | None = None  # what the plan was made for
    wait_for_resources_s: float = 600.0  # how long the job may wait for what its actors need
    max_bytes: int = DEFAULT_MAX_BYTES  # bytes read per input at most
    memory: MemoryPlan | None = None  # what the actors and decode tasks hold

    @property
    def needs(self) -> PoolNeeds:
        return PoolNeeds(self.actors, self.gpus_per_actor, self.cpus_per_actor, self.wait_for_resources_s)

    @property
    def decode_on_device(self) -> bool:
        """JPEGs travel to the model actors, which decode them (with inference.gpu_decoder)."""
        return self.inference.gpu_decoder is not None

    def lines(self) -> list[str]:
        """The plan in words, stage by stage: what a run will hold and where."""
        return [
            f"plan for {self.cluster.describe() if self.cluster else 'this machine'}:",
            f"  model: {self._actors()}; batch {self.batch_size}, precision {self._precision()}",
            f"  decoding: {self._decoding()}",
            f"  reading: {self.read_tasks} read task{'s' if self.read_tasks != 1 else ''} at once (0 CPUs, "
            f"listing and claiming inputs); {self.io_threads} file fetch thread"
            f"{'s' if self.io_threads != 1 else ''} per decode task",
            "  saving: part files written by tasks of 0 CPUs as batches finish",
            *([self.memory.line()] if self.memory else []),
        ]

    def _actors(self) -> str:
        actors = f"{self.actors} actor{'s' if self.actors != 1 else ''}"
        calls = f"{self.calls_per_actor} call{'s' if self.calls_per_actor != 1 else ''} at once"
        threads = f"{self.threads_per_call} torch thread{'s' if self.threads_per_call != 1 else ''} per call"
        if self.gpus_per_actor:
            held = f"{self.gpus_per_actor} GPU and {self.cpus_per_actor} CPU"
            return f"{actors}, one per GPU, each holding {held}, {calls}, {threads}"
        held = f"{self.cpus_per_actor} CPU{'s' if self.cpus_per_actor != 1 else ''}"
        return f"{actors} on CPUs, each holding {held}, {calls}, {threads}"

    def _free_cpus(self) -> int:
        if self.cluster is None:
            return 1
        return max(1, self.cluster.cpu_nodes * self.cluster.cpus_per_node - self.actors * self.cpus_per_actor)

    def _precision(self) -> str:
        return (
            "bf16 where the GPU has it, else fp16 (auto)"
            if self.inference.precision == "auto"
            else self.inference.precision
        )

    def _decoding(self) -> str:
        tasks = f"decode tasks of {self.block_rows} rows, 1 CPU each at idle priority"
        if not self.decode_on_device:
            return f"on CPUs: {tasks}, up to {self._free_cpus()} at once (the CPUs the model actors leave)"
        decoder = self.inference.gpu_decoder or "auto"
        decoder = "nvimgcodec where installed, else nvjpeg" if decoder == "auto" else decoder
        share = (
            "set from the measured rates as the job runs (0.25 at first)"
            if self.cpu_decode_share is None
            else f"{self.cpu_decode_share:g}, fixed"
        )
        return (
            f"JPEGs in the model actors by {decoder} (checked at warm-up), the rest and a share of them by "
            f"{tasks}, on {self.decode_cores_per_actor} core{'s' if self.decode_cores_per_actor != 1 else ''} "
            f"per model actor; share {share}"
        )


# Read tasks list and hash far ahead of decoding, sharing its idle-priority CPU: each one at
# once takes a share from decoding (a 1M-line manifest, first rows at normal priority: 24.4 s
# with 4 at once on 2 cores, 17.5 s with 1). One reads ~100,000 entries/s: ahead of any decode.
CPUS_PER_READ_TASK = 8
MAX_READ_TASKS = 4


def make_plan(
    cfg: LabelConfig, resolved: ResolvedWeights, cluster: Cluster, *, local_inputs: bool = True
) -> ExecutionPlan:
    """The plan for `cfg` on `cluster`; `local_inputs`: the inputs are on local disks."""
    compute, execution = cfg.compute, cfg.execution
    on_gpu = _on_gpu(cfg, cluster)
    precision = execution.precision if on_gpu else _cpu_precision(execution.precision, cluster)
    actors, calls, threads = _pool(execution, cluster, on_gpu)
    batch_size = execution.batch_size or (GPU_BATCH if on_gpu else CPU_BATCH.get(precision, CPU_BATCH["fp32"]))
    on_device = decodes_on_device(cfg, resolved, on_gpu)
    settings = InferenceSettings(
        weights=resolved,
        top_k=compute.top_k,
        features=compute.features,
        spatial=compute.spatial,
        whole_image=whole_image(compute, resolved),
        review_below=compute.review_below,
        embedding_dtype=compute.embedding_dtype,
        device="cuda" if on_gpu else "cpu",
        precision=precision,
        threads=threads,
        compile=execution.compile,
        warmup_batch=batch_size,
        gpu_decoder=execution.gpu_decoder if on_device else None,
    )
    whole = settings.whole_image
    memory = plan_memory(
        compute.model,
        precision,
        whole.resize * whole.max_size if whole else resolved.preprocessing.crop_size**2,
        batch_size,
        calls,
        batch_size * BLOCKS_PER_BATCH,
        on_gpu,
        cluster.memory_per_node,
        -(-actors // max(1, cluster.gpu_nodes if on_gpu else cluster.cpu_nodes)),
    )
    return ExecutionPlan(
        actors=actors,
        gpus_per_actor=int(on_gpu),
        calls_per_actor=calls,
        threads_per_call=threads,
        cpus_per_actor=0 if compute.model == NULL_MODEL else 1,
        batch_size=batch_size,
        block_rows=batch_size * BLOCKS_PER_BATCH,
        cpu_decode_share=None if execution.cpu_decode_share == "auto" else float(execution.cpu_decode_share),
        io_threads=execution.io_threads or (1 if local_inputs else REMOTE_IO_THREADS),
        max_pixels=execution.max_pixels,
        inference=settings,
        read_tasks=max(1, min(MAX_READ_TASKS, cluster.cpu_nodes * cluster.cpus_per_node // CPUS_PER_READ_TASK)),
        decode_cores_per_actor=max(1, cluster.cpu_nodes * cluster.cpus_per_node // actors - 1),
        cluster=cluster,
        wait_for_resources_s=execution.wait_for_resources,
        max_bytes=execution.max_bytes,
        memory=memory,
    )


def _on_gpu(cfg: LabelConfig, cluster: Cluster) -> bool:
    if cfg.execution.device == "cuda" and cluster.gpus == 0:
        raise UsageError("--device cuda was requested but the Ray cluster has no GPUs")
    # The null model runs no network: it would hold a GPU for nothing.
    return cluster.gpus > 0 and cfg.execution.device != "cpu" and cfg.compute.model != NULL_MODEL


def _cpu_precision(precision: str, cluster: Cluster) -> str:
    """ "auto" on CPUs is bf16 only where every node that may run a model actor has native
    bf16 (elsewhere bf16 is emulated, several times slower than fp32)."""
    if precision != "auto":
        return precision
    return "bf16" if cluster.cpu_bf16 else "fp32"


def _pool(execution: ExecutionOptions, cluster: Cluster, on_gpu: bool) -> tuple[int, int, int]:
    """(actors, calls per actor, threads per call): one actor per GPU, or one per CPU node
    running one single-threaded call per core (`--threads-per-worker` cores)."""
    _check_room(execution, cluster, on_gpu)
    if on_gpu:
        return (
            execution.num_workers or cluster.gpus,
            CONCURRENT_CALLS_PER_GPU_ACTOR,
            execution.threads_per_worker or GPU_ACTOR_THREADS,
        )
    cores = execution.threads_per_worker or cluster.cpus_per_node
    # One actor per CPU node, but never all of the cluster's CPUs: decode tasks need one at least
    # (two 1-CPU workers: one actor, and the other worker's CPU decodes).
    total = cluster.cpu_nodes * cluster.cpus_per_node
    actors = execution.num_workers or max(1, min(cluster.cpu_nodes, total - 1))
    if execution.compile:  # a compiled forward is not thread-safe: one call on all the cores
        return actors, 1, cores
    return actors, cores, 1


def _check_room(execution: ExecutionOptions, cluster: Cluster, on_gpu: bool) -> None:
    """--num-workers within what the cluster can place now: a GPU each, or a CPU each
    (an actor that can never start would hold the job until --wait-for-resources)."""
    if execution.num_workers is None:
        return
    room, unit = (cluster.gpus, "GPU") if on_gpu else (max(1, cluster.cpu_nodes * cluster.cpus_per_node), "CPU")
    if execution.num_workers > room:
        raise UsageError(
            f"--num-workers must be between 1 and {room} (one model actor per {unit}; the cluster "
            f"has {room} {unit}{'s' if room != 1 else ''} now), got {execution.num_workers}"
        )


def decodes_on_device(cfg: LabelConfig, resolved: ResolvedWeights, on_gpu: bool) -> bool:
    """--decode gpu, or auto on GPU actors, passes JPEGs to the model actors to decode."""
    decode = cfg.execution.decode
    if decode == "cpu" or cfg.compute.crop == "none":  # (--decode gpu with --crop none is refused earlier)
        return False
    if not resolved.preprocessing.resizes_on_device:
        if decode == "gpu":
            raise UsageError(
                f"--decode gpu resizes with {' or '.join(DEVICE_FILTERS)}, and these weights use "
                f"{resolved.preprocessing.interpolation}: use --decode cpu"
            )
        return False
    return decode == "gpu" or on_gpu
