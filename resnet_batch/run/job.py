"""A label run from its arguments to its summary: the output taken, the inputs listed and
set against what is done, the weights resolved, the plan executed, every input checked.

    OutputDir.lease -> plan_inputs / completed hashes -> Ray -> make_plan -> pipeline.execute
        -> check_output -> LabelSummary
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa

from ..core.columns import PATH
from ..core.errors import Interrupted, UsageError
from ..core.pathset import EMPTY, isin_sorted, path_hashes
from ..core.storage import is_local
from ..data.sources import InputPlan, list_inputs, plan_inputs
from ..model.registry import check_weights_argument
from ..output.writer import OutputDir
from ..review.evaluate import EvalReport, attach_labels, score
from . import pipeline, ray_session
from .check import OutputCheck, check_output, needs_ray
from .config import LabelConfig
from .description import rows_per_file, run_info, run_schema
from .plan import make_plan
from .progress import LogReporter, Snapshot
from .saving import Saver
from .summary import LabelSummary, Timeline

log = logging.getLogger(__name__)


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
        return _label(cfg, table, timeline, report or LogReporter(cfg.progress_every), savers)
    except Interrupted as stop:
        # A second signal while stopping (delivered once Ray has stopped) carries no counts:
        # the first one's, if it had any, are what the stop says.
        first = stop.__context__ if not stop.processed and isinstance(stop.__context__, Interrupted) else stop
        saved = savers[0].saved if savers else 0
        if saved and not first.processed:  # stopped after the pipeline's end: all of it is saved
            first = Interrupted(first.signum, saved, saved)
        raise first from None


def run_eval(cfg: LabelConfig, label_column: str | None = None, **run_options) -> tuple[LabelSummary, EvalReport]:
    """Top-1/top-5 error through the label pipeline; predictions land in cfg.output.

    `run_options` are run_label's (launched_at, report)."""
    cfg = dataclasses.replace(cfg, top_k=max(5, cfg.top_k))
    table = attach_labels(list_inputs(list(cfg.inputs), cfg.path_column), label_column)
    summary = run_label(cfg, table, **run_options)
    out = OutputDir(cfg.output)
    return summary, score(out.part_files(), out.fs, cfg.model, summary.weights)


@dataclass
class Inputs:
    """The inputs as the driver knows them before any work."""

    plan: InputPlan  # the driver's table (listed and manifest paths) and the directories to walk
    done_before: np.ndarray  # sorted hashes of paths the output already has (resume)
    listed: np.ndarray  # sorted hashes of the table's paths
    todo: pa.Table  # the table's rows not done before
    resume: bool

    @property
    def extra_fields(self) -> tuple[pa.Field, ...]:
        return tuple(f for f in self.plan.table.schema if f.name != PATH and not f.name.startswith("_"))

    @property
    def has_work(self) -> bool:
        return bool(self.todo.num_rows or self.plan.directories)

    @property
    def precount(self) -> bool:
        """A resume left with walked directories only counts them first: a finished run then
        ends without model actors, and without Ray at all when the directories are local."""
        return self.resume and bool(self.plan.directories) and not self.todo.num_rows


def _list_inputs(cfg: LabelConfig, table: pa.Table | None, out: OutputDir) -> Inputs:
    plan = InputPlan(table, ()) if table is not None else plan_inputs(list(cfg.inputs), cfg.path_column)
    done_before = out.completed_hashes() if cfg.mode == "resume" else EMPTY
    listed = path_hashes(plan.table.column(PATH).to_pylist())
    todo = plan.table.filter(pa.array(~isin_sorted(listed, done_before)))
    listed.sort()  # the table above is filtered in listing order; the checks want sorted hashes
    if plan.table.num_rows:
        log.info("%d inputs listed by the driver, %d of them already done",
                 plan.table.num_rows, plan.table.num_rows - todo.num_rows)
    if plan.directories:
        log.info("%d %s to walk in Ray tasks: %s", len(plan.directories),
                 "directory" if len(plan.directories) == 1 else "directories", ", ".join(plan.directories[:3]))
    return Inputs(plan, done_before, listed, todo, cfg.mode == "resume")


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
        inputs = _list_inputs(cfg, table, out)
        finished = _count_if_finished(out, inputs) if inputs.precount and not needs_ray(inputs.plan) else None
        if cfg.labels:
            weights.result()  # a --labels file that does not fit is refused before Ray starts
        if finished is None and inputs.has_work:
            report(Snapshot(0, 0, inputs.todo.num_rows, bool(inputs.plan.directories), 0, 0.0, phase="starting Ray"))
            started_ray = pipeline.start_ray(cfg.address)
            if inputs.precount and needs_ray(inputs.plan):
                finished = _count_if_finished(out, inputs)
        saver = _saver(cfg, out, weights, inputs)
        savers.append(saver)
        if finished is None and inputs.has_work:
            _execute(cfg, weights.result(), inputs, saver, timeline, report)
        saver.ensure_begun()  # a run that labeled nothing still applies --mode (overwrite replaces)
        checking = time.time()
        check = finished or check_output(out, inputs.plan, inputs.listed, inputs.done_before)
        timeline.check_s = time.time() - checking
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if started_ray:
            ray_session.stop()
        held.close()
    timeline.ended = time.time()
    return LabelSummary(weights=weights.result().weights, inputs=check.inputs, already_done=check.already_done,
                        processed=saver.stats.rows, rows_in_output=check.rows, errors=saver.stats.errors,
                        timeline=timeline, missing=check.missing, duplicates=check.duplicates, hidden=check.hidden)


def _saver(cfg: LabelConfig, out: OutputDir, weights: Future, inputs: Inputs) -> Saver:
    """What saves the run's rows, with the run described in its footers and run record."""
    resolved = weights.result()
    info = run_info(cfg, resolved, [f.name for f in inputs.extra_fields])
    if cfg.mode == "resume":
        out.check_resumable(info)
    schema = run_schema(cfg, resolved, inputs.extra_fields, info)
    return Saver(out, schema, rows_per_file(cfg, resolved), cfg.checkpoint_every,
                 begin=partial(out.begin, cfg.mode, info), run_info=info)


def _execute(cfg: LabelConfig, resolved, inputs: Inputs, saver: Saver, timeline: Timeline, report) -> None:
    first_paths = inputs.todo.column(PATH).slice(0, 1).to_pylist() + list(inputs.plan.directories[:1])
    cluster = ray_session.cluster(ask_bf16=cfg.precision == "auto")  # a task per node otherwise asked for nothing
    plan = make_plan(cfg, resolved, cluster, local_inputs=all(is_local(p) for p in first_paths))
    # Walks skip what is done and what the driver listed (it is labeled from the table).
    skip = np.union1d(inputs.done_before, inputs.listed)
    pipeline.execute(plan, InputPlan(inputs.todo, inputs.plan.directories), skip, saver, timeline, report,
                     cfg.wait_for_resources)


def _count_if_finished(out: OutputDir, inputs: Inputs) -> OutputCheck | None:
    """A resume's count of what its walks would find: the final check when nothing is left."""
    count = check_output(out, inputs.plan, inputs.listed, inputs.done_before)
    log.info("resume: %d of %d inputs still to label", count.missing, count.inputs)
    return None if count.missing else count


def _resolve_weights(cfg: LabelConfig):
    """The weights, checked as workers will load them; a checkpoint is read (torch: seconds)."""
    from ..model.weights import resolve_weights

    resolved = resolve_weights(cfg.model, cfg.weights, cfg.preprocess, cfg.labels)
    if cfg.top_k > len(resolved.categories):
        raise UsageError(f"--top-k {cfg.top_k} exceeds the model's {len(resolved.categories)} classes")
    return resolved
