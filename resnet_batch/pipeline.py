"""Wires the stages into a Ray Data pipeline. The only module that imports `ray.data`.

    inputs: listed files/manifests (driver) + directories walked by Ray tasks (listing.py)
        -> DecodeStage (tasks, CPU) -> Predictor (actor pool, GPU when present)
        -> part files (OutputDir) -> read back and checked against the inputs
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Iterable

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data import ActorPoolStrategy
from ray.data.block import Block, BlockAccessor, BlockMetadata
from ray.data.datasource import Datasink, Datasource, ReadTask, WriteResult
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import __version__
from .config import LabelConfig
from .decode import DecodeStage
from .errors import UsageError
from .evaluate import EvalReport, attach_labels, score
from .inference import ALLOCATOR_ENV, InferenceSettings, Predictor, resolve_precision
from .listing import count_against, read_directory, read_slice
from .models import check_weights, resolve_weights
from .pathset import EMPTY, isin_sorted, path_hashes
from .schema import output_schema, with_run_metadata
from .sources import InputPlan, list_inputs, plan_inputs
from .storage import is_local
from .writer import OutputDir, WriteStats

log = logging.getLogger(__name__)

# Actor restarts are bounded on purpose: an input that deterministically kills a worker
# must end the job with an error instead of restarting it forever. Tasks on an actor
# retry without bound while it restarts (a lost node makes them fail fast until the
# replacement is up); the restart budget is what bounds a crash loop.
ACTOR_RETRY_ARGS = {"max_restarts": 8, "max_task_retries": -1}
TASK_RETRY_ARGS = {"max_retries": 3}
BLOCKS_PER_BATCH = 4  # input block size, in batches: enough work per decode task
# Read tasks ask for no CPU, so without a cap Ray would start a worker process per read task at once.
READ_CONCURRENCY = 4
# Two calls at once per GPU actor, so one batch's host work and copies overlap another's
# compute. CPU actors run one single-threaded call per core instead (inference.InferenceSettings).
CONCURRENT_CALLS_PER_GPU_ACTOR = 2
GPU_ACTOR_THREADS = 4  # torch threads of each GPU actor call: host-side work only


@dataclass
class LabelSummary:
    weights: str  # as resolved: the torchvision enum name for DEFAULT, else what was given
    inputs: int
    already_done: int
    processed: int
    rows_in_output: int
    errors: Counter = field(default_factory=Counter)
    setup_s: float = 0.0
    run_s: float = 0.0
    missing: int = 0
    duplicates: int = 0
    steady_images_per_s: float = 0.0  # between the first and last model batch
    first_batch_s: float = 0.0  # from start to the first model batch: the fixed start-up cost

    @property
    def images_per_s(self) -> float:
        return self.processed / self.run_s if self.run_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.rows_in_output >= self.inputs

    def lines(self) -> list[str]:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return [
            f"inputs {self.inputs}, already done {self.already_done}, processed {self.processed}, "
            f"rows in output {self.rows_in_output}",
            f"errors: {errors}",
            f"setup {self.setup_s:.1f}s, run {self.run_s:.1f}s, {self.images_per_s:.1f} images/s"
            + (f"; first batch after {self.first_batch_s:.1f}s, then {self.steady_images_per_s:.1f} images/s steady"
               if self.steady_images_per_s else ""),
            "complete: every input has exactly one row" if self.complete else
            f"INCOMPLETE: {self.missing} inputs without a row, {self.duplicates} duplicate rows",
        ]


class _PartFileSink(Datasink[WriteStats]):
    """Adapts OutputDir to Ray's Datasink; per-file work happens in OutputDir."""

    def __init__(self, out: OutputDir, schema: pa.Schema, rows_per_file: int):
        self.out = out
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.stats = WriteStats()

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks: Iterable[Block], ctx) -> WriteStats:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        return self.out.write_tables([t for t in tables if t.num_rows], self.schema, self.rows_per_file)

    def on_write_complete(self, write_result: WriteResult[WriteStats]) -> None:
        for stats in write_result.write_returns:
            self.stats.add(stats)


class _InputsDatasource(Datasource):
    """The inputs: slices of the driver's table (`block_rows` each), and the directories,
    each walked by a read task (minus what is already done or listed by the driver)."""

    def __init__(self, plan: InputPlan, skip: np.ndarray, block_rows: int, progress):
        self.schema = plan.table.schema
        self.slices = [(ray.put(plan.table.slice(i, block_rows)), min(block_rows, plan.table.num_rows - i))
                       for i in range(0, plan.table.num_rows, block_rows)]
        self.directories = plan.directories
        self.skip = ray.put(skip)
        self.progress = progress

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    @property
    def num_read_tasks(self) -> int:
        return max(1, len(self.slices) + len(self.directories))

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        tasks = [ReadTask(partial(read_slice, ref), BlockMetadata(n, None, None)) for ref, n in self.slices]
        tasks += [
            ReadTask(partial(read_directory, d, self.skip, self.schema, self.progress),
                     BlockMetadata(None, None, None))
            for d in self.directories
        ]
        return tasks


class _LowPriorityDecode(DecodeStage):
    """Decoding on the CPU time the model leaves idle, in Ray's worker processes.

    Under SCHED_IDLE, decoding (and the I/O threads it starts, which inherit the policy)
    runs only when a core would otherwise idle, e.g. while a model call waits for its next
    batch, instead of preempting a forward. Measured on 2 cores, resnet18 fp32, when the
    model ran on OpenMP threads that stall together: niceness 10 76.5, SCHED_IDLE 80.1
    images/s; with one single-threaded call per core the gain is smaller (83.6-85.1 at
    normal priority, 85.3-85.9 under SCHED_IDLE). On GPU nodes the actor leaves most cores
    idle, so decoding should lose nothing to it (not yet measured on a GPU).
    """

    def __call__(self, batch):
        if hasattr(os, "SCHED_IDLE") and os.sched_getscheduler(0) != os.SCHED_IDLE:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return super().__call__(batch)


@ray.remote(num_cpus=0)
class _ProgressCounter:
    """Images listed for the model and through it so far, reported by the read tasks and the
    actors (retries may overcount)."""

    def __init__(self, listed: int):
        self.listed = listed
        self.done = 0
        self.first: tuple[float, int] | None = None  # (time, images) at the first report
        self.last = 0.0

    def add(self, n: int) -> None:
        self.done += n
        self.last = time.time()
        if self.first is None:
            self.first = (self.last, n)

    def add_listed(self, n: int) -> None:
        self.listed += n

    def get(self) -> tuple[int, int]:
        return self.done, self.listed

    def steady_rate(self) -> tuple[float, float]:
        """(images/s between the first and the last batch, wall time of the first batch)."""
        if self.first is None:
            return 0.0, 0.0
        if self.last <= self.first[0]:  # a single batch: no steady phase to measure
            return 0.0, self.first[0]
        return (self.done - self.first[1]) / (self.last - self.first[0]), self.first[0]


class _ReportingPredictor(Predictor):
    def __init__(self, settings: InferenceSettings, schema: pa.Schema, progress):
        super().__init__(settings, schema)
        self.progress = progress

    def __call__(self, batch):
        table = super().__call__(batch)
        self.progress.add.remote(table.num_rows)
        return table


class _ProgressLogger:
    """Logs images done / listed and the rate every `interval_s` while the job runs."""

    def __init__(self, listed: int, walking: bool, interval_s: float = 15.0):
        self.walking, self.interval_s = walking, interval_s
        # On the driver's node, so losing a worker node does not take progress with it;
        # progress is best-effort everywhere: it must never fail the job.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.counter = _ProgressCounter.options(scheduling_strategy=here, max_restarts=-1).remote(listed)
        self.steady_rate, self.first_batch_at = 0.0, 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self.stop.wait(self.interval_s):
            try:
                done, listed = ray.get(self.counter.get.remote(), timeout=10)
            except (ray.exceptions.RayError, TimeoutError):
                continue
            done = min(done, listed)
            elapsed = time.monotonic() - start
            log.info("progress: %d/%d images%s (%.1f%%), %.1f images/s", done, listed,
                     " listed so far" if self.walking else "", 100 * done / max(listed, 1), done / elapsed)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        try:
            self.steady_rate, self.first_batch_at = ray.get(self.counter.steady_rate.remote(), timeout=10)
            ray.kill(self.counter)
        except (ray.exceptions.RayError, TimeoutError):
            log.warning("progress counter lost; steady-rate figure unavailable")


def _init_ray(address: str | None) -> None:
    if ray.is_initialized():
        return
    try:
        # A Ray we start ourselves runs without the dashboard: on a small machine its
        # processes cost ~2 s of start-up and a few % of throughput (bench/BENCHMARKS.md).
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
    except ValueError:  # joining a running cluster, whose dashboard settings are its own
        ray.init(address=address, logging_level=logging.WARNING)


def _default_batch_size(on_gpu: bool, precision: str) -> int:
    """256 fills a GPU; on CPUs fp32 peaks at 32 and bf16 at 64 (bench/BENCHMARKS.md)."""
    if on_gpu:
        return 256
    return 64 if resolve_precision(precision, "cpu") == "bf16" else 32


@dataclass(frozen=True)
class PoolLayout:
    actors: int
    gpus_per_actor: int
    calls_per_actor: int  # calls one actor runs at once, each on a thread of its own
    threads_per_call: int  # torch intra-op threads of each call


def _pool_layout(cfg: LabelConfig) -> PoolLayout:
    """The model actors from what the cluster has: one per GPU, or one per CPU node running
    one single-threaded call per core (`--threads-per-worker` cores)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if cfg.device == "cuda" and gpus == 0:
        raise UsageError("--device cuda was requested but the Ray cluster has no GPUs")
    if gpus and cfg.device != "cpu":
        return PoolLayout(cfg.num_workers or gpus, 1, CONCURRENT_CALLS_PER_GPU_ACTOR,
                          cfg.threads_per_worker or GPU_ACTOR_THREADS)
    cpu_nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]
    cpus_per_node = int(min(n["Resources"]["CPU"] for n in cpu_nodes)) if cpu_nodes else 1
    cores = cfg.threads_per_worker or cpus_per_node
    actors = cfg.num_workers or max(1, len(cpu_nodes))
    if cfg.compile:  # a compiled forward is not thread-safe: one call on all the cores
        return PoolLayout(actors, 0, 1, cores)
    return PoolLayout(actors, 0, cores, 1)


def run_info(cfg: LabelConfig, resolved, extra_columns: list[str]) -> dict:
    return {
        "model": cfg.model,
        "weights": resolved.weights,
        "weights_source": resolved.source,
        "preprocessing": {"from_weights": resolved.preprocess_from, **resolved.preprocessing.describe()},
        "top_k": cfg.top_k,
        "embeddings": cfg.embeddings,
        "embedding_dtype": cfg.embedding_dtype,
        "embedding_dim": resolved.embedding_dim if cfg.embeddings else 0,
        "precision": cfg.precision,
        "extra_columns": extra_columns,
        "package": "resnet-batch",
        "package_version": __version__,
    }


@dataclass
class _Check:
    inputs: int = 0
    already_done: int = 0
    rows: int = 0
    missing: int = 0
    duplicates: int = 0


_count_directory = ray.remote(num_cpus=0)(count_against)


def _check_output(out: OutputDir, plan: InputPlan, listed: np.ndarray, done_before: np.ndarray) -> _Check:
    """Reads the output back: how many inputs were done before, lack a row, or have two.

    Walked directories are walked again (in Ray tasks) to count them against the output.
    """
    written = out.completed_hashes()
    check = _Check(rows=len(written), duplicates=len(written) - len(np.unique(written)))
    check.inputs = plan.table.num_rows
    check.already_done = int(isin_sorted(listed, done_before).sum())
    check.missing = int((~isin_sorted(listed, written)).sum())
    if plan.directories:
        refs = [ray.put(a) for a in (listed, done_before, written)]
        for inputs, done, missing in ray.get([_count_directory.remote(d, *refs) for d in plan.directories]):
            check.inputs += inputs
            check.already_done += done
            check.missing += missing
    return check


def run_label(cfg: LabelConfig, table: pa.Table | None = None) -> LabelSummary:
    """Label every input; `table` (path + extra columns) replaces listing cfg.inputs."""
    start = time.monotonic()
    resolved = resolve_weights(cfg.model, cfg.weights, cfg.preprocess)
    out = OutputDir(cfg.output)
    plan = InputPlan(table, ()) if table is not None else plan_inputs(list(cfg.inputs), cfg.path_column)
    extra_fields = tuple(f for f in plan.table.schema if f.name != "path" and not f.name.startswith("_"))
    resolved = dataclasses.replace(resolved, categories=tuple(check_weights(resolved)))
    if cfg.top_k > len(resolved.categories):
        raise UsageError(f"--top-k {cfg.top_k} exceeds the model's {len(resolved.categories)} classes")
    info = run_info(cfg, resolved, [f.name for f in extra_fields])
    out.prepare(cfg.mode, info)
    done_before = out.completed_hashes() if cfg.mode == "resume" else EMPTY
    listed = path_hashes(plan.table.column("path").to_pylist())
    todo = plan.table.filter(pa.array(~isin_sorted(listed, done_before)))
    if plan.table.num_rows:
        log.info("%d inputs listed by the driver, %d of them already done",
                 plan.table.num_rows, plan.table.num_rows - todo.num_rows)
    if plan.directories:
        log.info("%d %s to walk in Ray tasks: %s", len(plan.directories),
                 "directory" if len(plan.directories) == 1 else "directories", ", ".join(plan.directories[:3]))

    schema = with_run_metadata(
        output_schema(resolved.embedding_dim if cfg.embeddings else None, cfg.embedding_dtype,
                      cfg.top_k > 0, extra_fields),
        info,
    )
    stats, timing = WriteStats(), (0.0, 0.0)
    setup_s = time.monotonic() - start
    if todo.num_rows or plan.directories:
        _init_ray(cfg.address)
        setup_s = time.monotonic() - start
        # Walks skip what is done and what the driver listed (it is labeled from the table).
        skip = np.union1d(done_before, listed)
        todo_plan = InputPlan(todo, plan.directories)
        stats, timing = _execute(cfg, resolved, schema, todo_plan, skip, out, wall_start=time.time() - setup_s)
    run_s = time.monotonic() - start - setup_s
    check = _check_output(out, plan, np.sort(listed), done_before)
    return LabelSummary(
        weights=resolved.weights,
        inputs=check.inputs,
        already_done=check.already_done,
        processed=stats.rows,
        rows_in_output=check.rows,
        errors=stats.errors,
        setup_s=setup_s,
        run_s=run_s,
        missing=check.missing,
        duplicates=check.duplicates,
        steady_images_per_s=timing[0],
        first_batch_s=timing[1],
    )


def _execute(cfg: LabelConfig, resolved, schema: pa.Schema, todo: InputPlan, skip: np.ndarray, out: OutputDir,
             wall_start: float) -> tuple[WriteStats, tuple[float, float]]:
    """Run the pipeline; returns write stats and (steady images/s, seconds to the first batch)."""
    layout = _pool_layout(cfg)
    on_gpu = layout.gpus_per_actor > 0
    batch_size = cfg.batch_size or _default_batch_size(on_gpu, cfg.precision)
    first_paths = todo.table.column("path").slice(0, 1).to_pylist() + list(todo.directories[:1])
    io_threads = cfg.io_threads or (1 if all(is_local(p) for p in first_paths) else 16)
    settings = InferenceSettings(
        weights=resolved,
        top_k=cfg.top_k,
        embeddings=cfg.embeddings,
        embedding_dtype=cfg.embedding_dtype,
        device="cuda" if on_gpu else "cpu",
        precision=cfg.precision,
        threads=layout.threads_per_call,
        compile=cfg.compile,
    )
    log.info("%d model actor(s), %s, batch %d, %d call(s) at once each, %d thread(s) per call", layout.actors,
             "GPU" if on_gpu else "CPU", batch_size, layout.calls_per_actor, layout.threads_per_call)
    with _ProgressLogger(todo.table.num_rows, walking=bool(todo.directories)) as progress:
        block_rows = batch_size * BLOCKS_PER_BATCH
        source = _InputsDatasource(todo, skip, block_rows, progress.counter)
        # Reading is listing (I/O) or handing over a slice: it must not hold a CPU that
        # decoding needs, and it must not be fused into the decode tasks.
        # Ray merges what a read task yields into blocks of up to 128 MiB (about a million
        # paths): re-cut them, streaming, into blocks of a few batches, one per decode task.
        ds = ray.data.read_datasource(source, num_cpus=0, override_num_blocks=source.num_read_tasks,
                                      concurrency=min(READ_CONCURRENCY, source.num_read_tasks))
        ds = ds.repartition(target_num_rows_per_block=block_rows)
        with warnings.catch_warnings():
            # Ray 2.60 names no parameter for retry bounds yet; **ray_remote_args is the way.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
            ds = _add_stages(ds, cfg, resolved, settings, schema, io_threads, batch_size, layout, progress.counter)
        if out.driver_only:
            stats = _write_from_driver(ds, out, schema, cfg.rows_per_file)
        else:
            sink = _PartFileSink(out, schema, cfg.rows_per_file)
            # Writing is Parquet encoding of small rows and I/O: like reading, it must not
            # wait behind decode tasks for a CPU while finished rows pile up.
            ds.write_datasink(sink, ray_remote_args={"num_cpus": 0})
            stats = sink.stats
    first = progress.first_batch_at - wall_start if progress.first_batch_at else 0.0
    return stats, (progress.steady_rate, first)


def _write_from_driver(ds, out: OutputDir, schema: pa.Schema, rows_per_file: int) -> WriteStats:
    stats = WriteStats()
    for batch in ds.iter_batches(batch_size=rows_per_file, batch_format="pyarrow"):
        stats.add(out.write_tables([batch], schema, rows_per_file))
    return stats


def _add_stages(ds, cfg, resolved, settings, schema, io_threads, batch_size, layout: PoolLayout, counter):
    ds = ds.map_batches(
        _LowPriorityDecode(resolved.preprocessing, cfg.max_pixels, io_threads, defer_jpeg=cfg.decode == "gpu"),
        batch_size=None,  # one block (BLOCKS_PER_BATCH batches) per decode task
        batch_format="numpy",
        num_cpus=1,
        **TASK_RETRY_ARGS,
    )
    ds = ds.map_batches(
        _ReportingPredictor,
        fn_constructor_kwargs={"settings": settings, "schema": schema, "progress": counter},
        batch_size=batch_size,
        batch_format="numpy",
        compute=model_pool(layout.actors, layout.calls_per_actor),
        num_gpus=layout.gpus_per_actor or None,
        # One CPU whatever the cores it runs on: the rest is what lets decode tasks be scheduled
        # beside it (decode yields to the model anyway, under SCHED_IDLE).
        num_cpus=1,
        runtime_env={"env_vars": ALLOCATOR_ENV},  # merged with a submitted job's own env_vars
        **ACTOR_RETRY_ARGS,
    )
    return ds


def model_pool(actors: int, calls_per_actor: int) -> ActorPoolStrategy:
    """Up to `actors` actors, each running `calls_per_actor` calls at once on threads of its own."""
    return ActorPoolStrategy(min_size=1, max_size=actors, enable_true_multi_threading=True,
                             max_concurrent_calls_per_actor=calls_per_actor)


def run_eval(cfg: LabelConfig, label_column: str | None = None) -> tuple[LabelSummary, EvalReport]:
    """Top-1/top-5 error through the label pipeline; predictions land in cfg.output."""
    cfg = dataclasses.replace(cfg, top_k=max(5, cfg.top_k))
    table = attach_labels(list_inputs(list(cfg.inputs), cfg.path_column), label_column)
    summary = run_label(cfg, table)
    out = OutputDir(cfg.output)
    return summary, score(out.part_files(), out.fs, cfg.model, summary.weights)
