"""Wires the stages into a Ray Data pipeline. The only module that imports `ray.data`.

    inputs: listed files/manifests (driver) + directories walked by Ray tasks (listing.py)
        -> DecodeStage (tasks, CPU) -> Predictor (actor pool, GPU when present)
        -> the driver's loop: block references to saving.Saver (part files), progress
        -> read back and checked against the inputs

The driver runs no model and never imports torch (model_stage.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import signal
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data import ActorPoolStrategy
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from . import ray_session
from .check import OutputCheck, check_output, needs_ray
from .description import rows_per_file, run_info, run_schema, whole_image
from .config import LabelConfig
from ..data.decode import LowPriorityDecode
from ..core.errors import Interrupted, UsageError, WeightsUnavailableError
from ..review.evaluate import EvalReport, attach_labels, score
from .listing import read_directory, read_slice
from ..model.model_stage import ALLOCATOR_ENV, InferenceSettings, PredictorActor, resolve_precision
from ..core.pathset import EMPTY, isin_sorted, path_hashes
from ..data.preprocessing import DEVICE_FILTERS
from .progress import CounterClient, LogReporter, RunWatch, Snapshot
from ..model.registry import check_weights_argument
from .saving import BlockPart, Saver
from ..core.columns import with_run_metadata
from ..data.sources import InputPlan, list_inputs, plan_inputs
from ..core.storage import is_local
from .summary import LabelSummary, Timeline
from ..output.writer import OutputDir

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
SAVE_ON_INTERRUPT_S = 30.0  # after a Ctrl-C, how long finished rows may take to be saved
GPU_ACTOR_THREADS = 4  # torch threads of each GPU actor call: host-side work only


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


def _start_ray(address: str | None) -> bool:
    started = ray_session.join_or_start(address)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours is in progress.py
    return started


def _already_finished(out: OutputDir, plan: InputPlan, listed: np.ndarray, done_before: np.ndarray) -> OutputCheck | None:
    """A resume's count of what its walks would find: the final check when nothing is left."""
    count = check_output(out, plan, listed, done_before)
    log.info("resume: %d of %d inputs still to label", count.missing, count.inputs)
    return None if count.missing else count


def _resolve_weights(cfg: LabelConfig):
    """The weights, checked as workers will load them; a checkpoint is read (torch: seconds)."""
    from ..model.weights import resolve_weights

    resolved = resolve_weights(cfg.model, cfg.weights, cfg.preprocess, cfg.labels)
    if cfg.top_k > len(resolved.categories):
        raise UsageError(f"--top-k {cfg.top_k} exceeds the model's {len(resolved.categories)} classes")
    return resolved


def run_label(cfg: LabelConfig, table: pa.Table | None = None, *, launched_at: float | None = None,
              report=None) -> LabelSummary:
    """Label every input; `table` (path + extra columns) replaces listing cfg.inputs.

    `report` is called with a progress.Snapshot a few times a second (default: a log line
    every cfg.progress_every seconds). On SIGINT/SIGTERM (KeyboardInterrupt or Interrupted)
    the finished work is saved first, then errors.Interrupted says how much.
    """
    timeline = Timeline(launched=launched_at or time.time())
    check_weights_argument(cfg.model, cfg.weights)  # a mistyped name fails now, not after Ray's start
    savers: list[Saver] = []  # the run's, once made
    try:
        return _label(cfg, table, timeline, report, savers)
    except Interrupted as stop:
        # A second signal while stopping (delivered once Ray has stopped) carries no counts:
        # the first one's, if it had any, are what the stop says.
        first = stop.__context__ if not stop.processed and isinstance(stop.__context__, Interrupted) else stop
        saved = savers[0].saved if savers else 0
        if saved and not first.processed:  # stopped after the pipeline's end: all of it is saved
            first = Interrupted(first.signum, saved, saved)
        raise first from None


def _label(cfg: LabelConfig, table: pa.Table | None, timeline: Timeline, report, savers: list) -> LabelSummary:
    started_ray = False
    # A checkpoint takes seconds to read (and torch to import): the weights are resolved on
    # a thread while the driver lists its inputs and Ray starts.
    pool = ThreadPoolExecutor(1, thread_name_prefix="resnet-batch-weights")
    weights = pool.submit(_resolve_weights, cfg)
    held = ExitStack()
    try:
        out = OutputDir(cfg.output)
        out.check(cfg.mode)
        held.enter_context(out.lease())  # one writer at a time, until the run has ended
        out.check(cfg.mode)  # again: another job may have written there before it let go
        plan = InputPlan(table, ()) if table is not None else plan_inputs(list(cfg.inputs), cfg.path_column)
        extra_fields = tuple(f for f in plan.table.schema if f.name != "path" and not f.name.startswith("_"))
        done_before = out.completed_hashes() if cfg.mode == "resume" else EMPTY
        listed = path_hashes(plan.table.column("path").to_pylist())
        todo = plan.table.filter(pa.array(~isin_sorted(listed, done_before)))
        listed.sort()  # the table above is filtered in listing order; the checks want sorted hashes
        if plan.table.num_rows:
            log.info("%d inputs listed by the driver, %d of them already done",
                     plan.table.num_rows, plan.table.num_rows - todo.num_rows)
        if plan.directories:
            log.info("%d %s to walk in Ray tasks: %s", len(plan.directories),
                     "directory" if len(plan.directories) == 1 else "directories", ", ".join(plan.directories[:3]))
        # A resume left with walked directories only counts them first: a finished run then
        # ends without model actors, and without Ray at all when the directories are local.
        precount = cfg.mode == "resume" and bool(plan.directories) and not todo.num_rows
        finished = None  # the final check, when it can be made before any work
        if precount and not needs_ray(plan):
            finished = _already_finished(out, plan, listed, done_before)
        if cfg.labels:
            weights.result()  # a --labels file that does not fit is refused before Ray starts
        report = report or LogReporter(cfg.progress_every)
        if finished is None and (todo.num_rows or plan.directories):
            report(Snapshot(0, 0, todo.num_rows, bool(plan.directories), 0, 0.0, phase="starting Ray"))
            started_ray = _start_ray(cfg.address)
            if precount and needs_ray(plan):
                finished = _already_finished(out, plan, listed, done_before)
        resolved = weights.result()
        info = run_info(cfg, resolved, [f.name for f in extra_fields])
        if cfg.mode == "resume":
            out.check_resumable(info)
        schema = run_schema(cfg, resolved, extra_fields, info)
        saver = Saver(out, schema, rows_per_file(cfg, resolved), cfg.checkpoint_every,
                      begin=partial(out.begin, cfg.mode, info), run_info=info)
        savers.append(saver)
        if finished is None and (todo.num_rows or plan.directories):
            # Walks skip what is done and what the driver listed (it is labeled from the table).
            skip = np.union1d(done_before, listed)
            _execute(cfg, resolved, schema, InputPlan(todo, plan.directories), skip, saver, timeline, report)
        saver.ensure_begun()  # a run that labeled nothing still applies --mode (overwrite replaces)
        check = finished or check_output(out, plan, listed, done_before)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if started_ray:
            ray_session.stop()
        held.close()
    timeline.ended = time.time()
    return LabelSummary(
        weights=resolved.weights,
        inputs=check.inputs,
        already_done=check.already_done,
        processed=saver.stats.rows,
        rows_in_output=check.rows,
        errors=saver.stats.errors,
        timeline=timeline,
        missing=check.missing,
        duplicates=check.duplicates,
        hidden=check.hidden,
    )


_END = object()


def _feed(ds, into: queue.Queue) -> None:
    """Runs the dataset, passing each finished block's reference (never its rows) to the driver."""
    try:
        for bundle in ds.iter_internal_ref_bundles():
            parts = [BlockPart(entry.ref, s.num_rows if s else entry.metadata.num_rows, s and s.start_offset)
                     for entry, s in zip(bundle.blocks, bundle.slices)]
            into.put([p for p in parts if p.rows])  # a walk with nothing left to do yields empty blocks
        into.put(_END)
    except BaseException as exc:  # handed to the driver's loop, which raises it
        into.put(exc)


def _execute(cfg: LabelConfig, resolved, schema: pa.Schema, todo: InputPlan, skip: np.ndarray, saver: Saver,
             timeline: Timeline, report) -> None:
    """Run the pipeline, saving as it goes; on an interrupt, save what is done, then raise Interrupted."""
    layout = _pool_layout(cfg)
    on_gpu = layout.gpus_per_actor > 0
    batch_size = cfg.batch_size or _default_batch_size(on_gpu, cfg.precision)
    first_paths = todo.table.column("path").slice(0, 1).to_pylist() + list(todo.directories[:1])
    io_threads = cfg.io_threads or (1 if all(is_local(p) for p in first_paths) else 16)
    settings = InferenceSettings(
        weights=resolved,
        top_k=cfg.top_k,
        features=cfg.features,
        spatial=cfg.spatial,
        whole_image=cfg.crop == "none",
        review_below=cfg.review_below,
        embedding_dtype=cfg.embedding_dtype,
        device="cuda" if on_gpu else "cpu",
        precision=cfg.precision,
        threads=layout.threads_per_call,
        compile=cfg.compile,
    )
    defer_jpeg = _decodes_on_device(cfg, resolved, on_gpu)
    log.info("%d model actor(s), %s, batch %d, %d call(s) at once each, %d thread(s) per call; JPEGs decoded %s",
             layout.actors, "GPU" if on_gpu else "CPU", batch_size, layout.calls_per_actor, layout.threads_per_call,
             "in the model actors" if defer_jpeg else "by CPU tasks")
    counter = CounterClient()
    block_rows = batch_size * BLOCKS_PER_BATCH
    source = _InputsDatasource(todo, skip, block_rows, counter.actor)
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
        ds = _add_stages(ds, cfg, resolved, settings, schema, io_threads, defer_jpeg, batch_size, layout,
                         counter.actor)

    blocks: queue.Queue = queue.Queue()
    timeline.executing = time.time()
    watch = RunWatch(counter, todo.table.num_rows, len(todo.directories), layout.actors, layout.gpus_per_actor,
                     cfg.wait_for_resources)
    threading.Thread(target=_feed, args=(ds, blocks), daemon=True, name="resnet-batch-feed").start()
    done = 0
    try:
        while True:
            try:
                item = blocks.get(timeout=0.2)  # short: the loop also saves on time and reports
            except queue.Empty:
                item = None
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise _why_actors_failed(item) or item
            if item and "ran" not in saver.run_info:  # before the first save: the footers say what ran
                record_what_ran(saver, counter.actors())
            for part in item or ():
                saver.add(part)
                done += part.rows
            if item:
                timeline.last_batch = time.time()
                if not timeline.first_batch:
                    timeline.first_batch, timeline.first_batch_rows = timeline.last_batch, done
            saver.tick()
            report(watch.snapshot(done, saver.saved))
            watch.check()
        record_what_ran(saver, counter.actors())
        saver.finish()
        report(watch.snapshot(done, saver.saved, walking=False))
    except BaseException as exc:  # a signal or a failure: keep what is finished, for --mode resume
        log.debug("stopping (%s): saving %d finished rows", type(exc).__name__, done - saver.saved)
        try:
            saver.finish(timeout_s=SAVE_ON_INTERRUPT_S)
        except Exception:
            log.warning("the rows finished before the stop could not be saved", exc_info=True)
        if isinstance(exc, (KeyboardInterrupt, Interrupted)):
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            raise Interrupted(signum, done, saver.saved) from None
        raise
    finally:
        counter.close()


def record_what_ran(saver: Saver, actors: tuple) -> None:
    """The run's metadata with what the model actors resolved ("auto" precision and device
    as they came out on their nodes) and the library versions, in the footers of the part
    files still to be written and in the run record."""
    if not actors:
        return
    info = saver.run_info
    ran = sorted({json.dumps(a, sort_keys=True) for a in actors})
    info["ran"] = [json.loads(r) for r in ran]
    info["precision"] = ",".join(sorted({a["precision"] for a in actors}))
    info["device"] = ",".join(sorted({a["device"] for a in actors}))
    info["versions"] = {"ray": ray.__version__, "torch": ",".join(sorted({a["torch"] for a in actors})),
                        "torchvision": ",".join(sorted({a["torchvision"] for a in actors}))}
    saver.schema = with_run_metadata(saver.schema, info)
    if saver.begun:
        saver.out.record_run(info)


def _why_actors_failed(exc: BaseException) -> Exception | None:
    """A model actor whose constructor raised, as the one-line error it raised.

    Ray keeps only the constructor's traceback as text: its last line is "module.Type: message".
    Weights that the driver did not read (a torchvision release in the hub cache) fail here.
    """
    if not (isinstance(exc, ray.exceptions.RayActorError) and exc.actor_init_failed):
        return None
    last = exc.error_msg.strip().splitlines()[-1]
    kind, _, message = last.partition(": ")
    if kind.rsplit(".", 1)[-1] == WeightsUnavailableError.__name__:
        return WeightsUnavailableError(message)
    return RuntimeError(f"the model actors could not start: {last}")


def _decodes_on_device(cfg: LabelConfig, resolved, on_gpu: bool) -> bool:
    """--decode: gpu, or auto on GPU actors, passes JPEGs to the model actors to decode."""
    if cfg.decode == "cpu" or cfg.crop == "none":  # (--decode gpu with --crop none is refused earlier)
        return False
    if not resolved.preprocessing.resizes_on_device:
        if cfg.decode == "gpu":
            raise UsageError(f"--decode gpu resizes with {' or '.join(DEVICE_FILTERS)}, and these weights use "
                             f"{resolved.preprocessing.interpolation}: use --decode cpu")
        return False
    return cfg.decode == "gpu" or on_gpu


def _add_stages(ds, cfg, resolved, settings, schema, io_threads, defer_jpeg, batch_size, layout: PoolLayout,
                counter):
    ds = ds.map_batches(
        LowPriorityDecode(resolved.preprocessing, cfg.max_pixels, io_threads, defer_jpeg=defer_jpeg,
                          whole=whole_image(cfg, resolved), cpu_share=cfg.cpu_decode_share),
        batch_size=None,  # one block (BLOCKS_PER_BATCH batches) per decode task
        batch_format="numpy",
        num_cpus=1,
        **TASK_RETRY_ARGS,
    )
    ds = ds.map_batches(
        PredictorActor,
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


def run_eval(cfg: LabelConfig, label_column: str | None = None, **run_options) -> tuple[LabelSummary, EvalReport]:
    """Top-1/top-5 error through the label pipeline; predictions land in cfg.output.

    `run_options` are run_label's (launched_at, report)."""
    cfg = dataclasses.replace(cfg, top_k=max(5, cfg.top_k))
    table = attach_labels(list_inputs(list(cfg.inputs), cfg.path_column), label_column)
    summary = run_label(cfg, table, **run_options)
    out = OutputDir(cfg.output)
    return summary, score(out.part_files(), out.fs, cfg.model, summary.weights)
