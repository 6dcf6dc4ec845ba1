"""Wires the stages into a Ray Data pipeline and drives it. The only module that imports `ray.data`.

    inputs: read units (manifest splits, named files, walks) read by Ray tasks (listing.py)
        -> DecodeStage (tasks, CPU) -> PredictorActor (actor pool, GPU when present)
        -> the driver's loop: block references to saving.Saver (part files), progress

What runs where, and how much at once, is the ExecutionPlan's (plan.py); the driver runs
no model and never imports torch (model/actor.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import ray
import ray.data
from ray.data import ActorPoolStrategy
from ray.data.datasource import Datasource, ReadTask

from ..config.plan import ExecutionPlan
from ..core.errors import Interrupted, LeaseLost, SaveFailed, one_line, root_cause
from ..core.signals import signals_deferred
from ..core.storage import is_unreachable
from ..data.decode import JpegHandoff, LowPriorityDecode, to_idle_priority
from ..data.input_plan import InputPlan
from ..model.actor import PredictorActor
from ..model.settings import ALLOCATOR_ENV
from . import ray_compat, ray_session
from .listing import read_unit
from .progress.counter import CounterClient, CounterReports
from .progress.watch import RunWatch
from .saving import BlockPart, Saver
from .summary import LabelRun

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.actor import ActorHandle

    from .bookkeeping import Books


log = logging.getLogger(__name__)

# Actor restarts are bounded on purpose: an input that deterministically kills a worker
# must end the job with an error instead of restarting it forever. Tasks on an actor
# retry without bound while it restarts (a lost node makes them fail fast until the
# replacement is up); the restart budget is what bounds a crash loop.
ACTOR_RETRY_ARGS: dict[str, Any] = {"max_restarts": 8, "max_task_retries": -1}
SAVE_ON_INTERRUPT_S = 30.0  # after a Ctrl-C, how long finished rows may take to be saved


class InputsDatasource(Datasource):
    """The inputs: a read task per read unit (data/input_plan.py), each claiming what it
    lists in the books before passing it on (listing.py)."""

    def __init__(self, plan: InputPlan, books: Books, progress: ActorHandle):
        self.plan, self.books, self.progress = plan, books, progress

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    @property
    def num_read_tasks(self) -> int:
        return max(1, len(self.plan.units))

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: object = None
    ) -> list[ReadTask]:
        return [
            ReadTask(
                partial(_read_at_idle_priority, unit, index, self.books, self.plan.schema, self.progress),
                ray_compat.unknown_block_metadata(),
            )
            for index, unit in enumerate(self.plan.units)
        ]


def _read_at_idle_priority(*args):
    """A read task under SCHED_IDLE, as decoding is: it lists ahead of what the pipeline can
    take, and at normal priority it took the cores from start-up and the first decoding."""
    to_idle_priority()
    yield from read_unit(*args)


@contextmanager
def ray_for_the_job(address: str | None) -> Iterator[bool]:
    """Ray joined or started (ray_session) for the block (True: this job started it); at its
    end a Ray of the job's own is stopped, and a cluster the block joined disconnected from."""
    joined_before = ray.is_initialized()
    started = ray_session.join_or_start(address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours: progress/watch.py and the command line's bar
    # A stage's own error, not Ray Data's UserCodeException around it (whose cause a task's
    # pickling drops): the job tells a store that stopped answering from a bug by it.
    context.raise_original_map_exception = True
    try:
        yield started
    finally:
        if started:
            ray_session.stop()
        elif not joined_before:
            ray_session.disconnect()


_END = object()


def _feed(run: ray_compat.DatasetRun, into: queue.Queue) -> None:
    """Runs the dataset, passing each finished block's reference (never its rows) to the driver."""
    try:
        for blocks in run:
            into.put(
                [BlockPart(ref, rows, offset) for ref, rows, offset in blocks if rows]
            )  # a walk with nothing left to do yields empty blocks
        into.put(_END)
    except BaseException as exc:  # handed to the driver's loop, which raises it
        into.put(exc)


def execute(plan: ExecutionPlan, inputs: InputPlan, books: Books, run: LabelRun) -> None:
    """Run the pipeline, saving as it goes (run.saver); on an interrupt, save what is done,
    then raise Interrupted.

    `books`: the run's bookkeeping.Books, which the read tasks claim their inputs in.
    """
    for line in plan.lines():
        log.info("%s", line)
    saver, timeline = run.saver, run.timeline
    counter = CounterClient()
    counter.actor.share_decoding.remote(plan.decode_cores_per_actor, plan.cpu_decode_share)
    source = InputsDatasource(inputs, books, counter.actor)
    # Reading (listing, hashing, claiming) holds no CPU that decoding's tasks would wait
    # for, and is not fused into them; it runs under SCHED_IDLE beside them, as many
    # tasks at once as the plan says (read_tasks).
    # Ray merges what a read task yields into blocks of up to 128 MiB (about a million
    # paths): re-cut them, streaming, into blocks of a few batches, one per decode task.
    ds = ray.data.read_datasource(
        source,
        num_cpus=0,
        override_num_blocks=source.num_read_tasks,
        concurrency=min(plan.read_tasks, source.num_read_tasks),
    )
    ds = add_stages(ds.repartition(target_num_rows_per_block=plan.block_rows), plan, saver.schema, counter.actor)
    timeline.executing = time.time()
    blocks: queue.Queue = queue.Queue()
    dataset_run = ray_compat.DatasetRun(ds)
    feed = threading.Thread(target=_feed, args=(dataset_run, blocks), daemon=True, name="resnet-batch-feed")
    feed.start()
    loop = DriverLoop(blocks, run, counter, RunWatch(counter, source.num_read_tasks, plan.needs))
    try:
        loop.run()
    except BaseException as exc:  # a signal or a failure: keep what is finished, for --mode resume
        try:
            loop.take_arrived()
        except Exception:  # the same store failing again: the first error says what happened
            log.debug("taking the arrived blocks on stop", exc_info=True)
        if isinstance(root_cause(exc), LeaseLost):  # the output is another job's now: write nothing more
            dataset_run.stop()
            feed.join(timeout=30)
            raise root_cause(exc) from None
        _save_on_stop(saver, exc, loop.received)
        dataset_run.stop()  # before Ray's shutdown, which its threads (and the feed's) would outlive
        feed.join(timeout=30)
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(Interrupted.of(exc).signum, loop.received, saver.saved) from None
        if isinstance(exc, ray.exceptions.RayActorError) and exc.actor_init_failed:
            raise counter.start_failure() or exc from None
        if is_unreachable(root_cause(exc)):  # past the writes' retries: what this run saved is known
            raise SaveFailed(root_cause(exc), saver.saved, unreachable=True) from exc
        if isinstance(root_cause(exc), OSError):  # the part files' writes: a full disk, a lost bucket
            raise SaveFailed(root_cause(exc), saver.out.rows_on_disk()) from exc
        raise
    finally:
        timeline.actor_phases, timeline.decoding, timeline.placements = counter.starts_and_decoding()
        timeline.labeled = loop.watch.last_labeled
        counter.close()


@dataclass
class DriverLoop:
    """What the driver holds while the pipeline runs: the finished blocks arriving from the
    feed, the run they belong to (its saver, timeline and reporter), the rows received so far."""

    blocks: queue.Queue
    label_run: LabelRun
    counter: CounterClient
    watch: RunWatch
    received: int = 0  # rows whose blocks reached the driver (each is saved, or saved on a stop)

    @property
    def saver(self) -> Saver:
        return self.label_run.saver

    def run(self) -> None:
        """Hand finished blocks to the saver, and report, until the end."""
        saver, timeline = self.saver, self.label_run.timeline
        saver.while_waiting = self._report_storage_wait
        while True:
            try:
                item = self.blocks.get(timeout=0.2)  # short: the loop also saves on time and reports
            except queue.Empty:
                item = None
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            if item and saver.record.ran is None:  # before the first save: the footers say what ran
                saver.record_what_ran(self.counter.actors())
            self._add(item or [])
            if item:
                timeline.last_batch = time.time()
                if not timeline.first_batch:
                    timeline.first_batch, timeline.first_batch_rows = timeline.last_batch, self.received
            saver.tick()
            self.label_run.report(self.watch.snapshot(self.received, saver.saved))
            self.watch.check()
        saver.record_what_ran(self.counter.actors())
        saver.finish()
        errors = sum(saver.stats.errors.values())
        self.label_run.report(self.watch.snapshot(self.received, saver.saved, walking=False, errors=errors))

    def _report_storage_wait(self, waited_s: float) -> None:
        pending = len(self.saver.in_flight)
        phase = f"waiting for storage ({pending} part writes pending for {waited_s:.0f} s)"
        self.label_run.report(replace(self.watch.snapshot(self.received, self.saver.saved), phase=phase))

    def take_arrived(self) -> None:
        """Hand the saver the finished blocks that reached the driver but not yet its loop."""
        while True:
            try:
                item = self.blocks.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, list):
                self._add(item)

    def _add(self, parts: list[BlockPart]) -> None:
        for part in parts:
            self.saver.add(part)
            self.received += part.rows


def _save_on_stop(saver: Saver, exc: BaseException, done: int) -> None:
    """Save what is finished (at most SAVE_ON_INTERRUPT_S); a second signal meanwhile waits
    for it, so that the stop's count is what the output holds."""
    log.debug("stopping (%s): saving %d finished rows", type(exc).__name__, done - saver.saved)
    with signals_deferred(redeliver=False):
        try:
            saver.finish(timeout_s=SAVE_ON_INTERRUPT_S)
        except Exception as failed:
            log.debug("saving on stop", exc_info=True)
            if not isinstance(root_cause(exc), OSError):  # a failed save says so in the job's last line
                log.warning(
                    "the rows finished before the stop could not be saved: %s", one_line(root_cause(failed), 300)
                )


def add_stages(ds: ray.data.Dataset, plan: ExecutionPlan, schema: pa.Schema, progress: ActorHandle):
    """Decode tasks, then the model actor pool, as the plan lays them out; `progress` is the
    counter actor the stages report to."""
    with warnings.catch_warnings():
        # Ray 2.60 names no parameter for retry bounds yet; **ray_remote_args is the way.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
        ds = ds.map_batches(
            LowPriorityDecode(
                plan.inference.weights.preprocessing,
                plan.max_pixels,
                plan.io_threads,
                whole=plan.inference.whole_image,
                handoff=JpegHandoff(plan.cpu_decode_share, CounterReports(progress)) if plan.decode_on_device else None,
                max_bytes=plan.max_bytes,
            ),
            batch_size=None,  # one block (BLOCKS_PER_BATCH batches) per decode task
            batch_format="numpy",
            num_cpus=1,  # Ray's default retries (3) bound a decode task's; an argument would stop the fusion below
            memory=plan.memory.decode_task if plan.memory else None,  # as many at once as a node holds
        )
        # A decode task's block leaves it cut into batches (Ray fuses this into the task), so
        # each model call is one batch and its rows reach the driver, the saver and the bar
        # as soon as that batch is done, not once the decode block's last batch is.
        ds = ds.repartition(target_num_rows_per_block=plan.batch_size)
        return ds.map_batches(
            PredictorActor,
            fn_constructor_kwargs={"settings": plan.inference, "schema": schema, "reporter": CounterReports(progress)},
            batch_size=plan.batch_size,
            batch_format="numpy",
            compute=model_pool(plan.actors, plan.calls_per_actor),
            num_gpus=plan.gpus_per_actor or None,
            # One CPU whatever the cores it runs on: the rest is what lets decode tasks be scheduled
            # beside it (decode yields to the model anyway, under SCHED_IDLE).
            num_cpus=plan.cpus_per_actor,
            runtime_env={"env_vars": ALLOCATOR_ENV},  # merged with a submitted job's own env_vars
            **ACTOR_RETRY_ARGS,
        )


def model_pool(actors: int, calls_per_actor: int) -> ActorPoolStrategy:
    """Up to `actors` actors, each running `calls_per_actor` calls at once on threads of its own."""
    return ActorPoolStrategy(
        min_size=1, max_size=actors, enable_true_multi_threading=True, max_concurrent_calls_per_actor=calls_per_actor
    )
