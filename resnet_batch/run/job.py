"""A label run from its arguments to its summary: the output taken, the inputs cut into
read units, the weights resolved, what is left counted (resume), the plan executed, every
input checked.

    OutputDir.lease -> plan_inputs -> (resume: load_done, count) -> Ray, Books -> make_plan
        -> pipeline.execute (read tasks claim in the books) -> check_output -> LabelSummary
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from typing import TYPE_CHECKING

import pyarrow as pa

from ..config.description import rows_per_file, run_record, run_schema
from ..config.estimate import estimate_line, guessed_rate
from ..config.label_config import LabelConfig
from ..config.plan import make_plan
from ..core.errors import Interrupted, UsageError
from ..core.signals import signals_deferred
from ..core.storage import is_local
from ..data.input_plan import InputPlan, plan_inputs
from ..model.registry import check_weights_argument
from ..output import repair
from ..output.ownership import OutputLease
from ..output.writer import OutputDir
from ..review.evaluate import EvalReport, attach_labels, score
from . import estimate, pipeline, ray_session
from .bookkeeping import Books, check_output, count_here, count_on_ray, counts_here, load_done_once
from .listing import list_here
from .progress.snapshot import LogReporter, Snapshot
from .saving import Saver
from .summary import LabelRun, LabelSummary, Timeline

if TYPE_CHECKING:
    from ..model.weights import ResolvedWeights
    from .bookkeeping import OutputCheck
    from .progress.snapshot import Reporter


log = logging.getLogger(__name__)


def run_label(
    cfg: LabelConfig, table: pa.Table | None = None, *, launched_at: float | None = None, report: Reporter | None = None
) -> LabelSummary:
    """Label every input; `table` (path + extra columns) replaces listing cfg.inputs.

    `report` is called with a Snapshot a few times a second (default: a log line every
    cfg.execution.progress_every seconds). On SIGINT/SIGTERM (KeyboardInterrupt or Interrupted)
    the finished work is saved first, then errors.Interrupted says how much.
    """
    check_weights_argument(cfg.compute.model, cfg.compute.weights)  # a mistyped name fails now, not after Ray's start
    timeline = Timeline(launched=launched_at or time.time())
    return _label(cfg, table, report or LogReporter(cfg.execution.progress_every), timeline)


def run_eval(cfg: LabelConfig, label_column: str | None = None, **run_options) -> tuple[LabelSummary, EvalReport]:
    """Top-1/top-5 error through the label pipeline; predictions land in cfg.output.

    `run_options` are run_label's (launched_at, report)."""
    cfg = cfg.replace(top_k=max(5, cfg.compute.top_k))
    table = attach_labels(list_here(plan_inputs(list(cfg.inputs), cfg.path_column)), label_column)
    summary = run_label(cfg, table, **run_options)
    out = OutputDir(cfg.output)
    return summary, score(out.part_files(), out.fs, cfg.compute.model, summary.weights)


def _plan_inputs(cfg: LabelConfig, table: pa.Table | None) -> InputPlan:
    plan = InputPlan.of_table(table) if table is not None else plan_inputs(list(cfg.inputs), cfg.path_column)
    if plan.directories:
        log.info(
            "%d %s to walk in Ray tasks: %s",
            len(plan.directories),
            "directory" if len(plan.directories) == 1 else "directories",
            ", ".join(plan.directories[:3]),
        )
    return plan


def _label(cfg: LabelConfig, table: pa.Table | None, report: Reporter, timeline: Timeline) -> LabelSummary:
    # A checkpoint takes seconds to read (and torch to import): the weights are resolved on
    # a thread while the driver lists its inputs and Ray starts.
    pool = ThreadPoolExecutor(1, thread_name_prefix="resnet-batch-weights")
    weights = pool.submit(_resolve_weights, cfg)
    run: LabelRun | None = None  # once made, a stop says what its saver saved
    try:
        with ExitStack() as held:  # closed in reverse: Ray stopped, then the lease let go
            held.callback(pool.shutdown, wait=False, cancel_futures=True)
            out, plan, books, pending = _prepare(cfg, table, report, weights, held)
            run = LabelRun(cfg, report, timeline, _saver(cfg, out, weights.result(), plan))
            if pending:
                _execute(run, weights.result(), plan, books)
            run.saver.ensure_begun()  # a run that labeled nothing still applies --mode (overwrite replaces)
            check, misnamed = _final_check(out, books, run.saver, timeline)
    except KeyboardInterrupt as caught:
        raise stop_said(caught, run.saver.saved if run else 0) from None
    timeline.ended = time.time()
    if check.repeated:
        log.warning("%d listed entries named an input listed before; each path is labeled once", check.repeated)
    return LabelSummary(
        weights=weights.result().weights,
        inputs=check.inputs,
        already_done=check.already_done,
        processed=run.saver.stats.rows,
        rows_in_output=check.rows,
        errors=run.saver.stats.errors,
        timeline=timeline,
        missing=check.missing,
        duplicates=check.duplicates,
        hidden=check.hidden,
        misnamed=misnamed,
        errors_before=books.errors_loaded,
        outside=check.outside,
    )


def stop_said(caught: KeyboardInterrupt, saved: int) -> Interrupted:
    """What a stop says: the counts the pipeline gave the signal that stopped it (a second
    signal, delivered once Ray has stopped, carries none: the first one's are said), else the
    rows saved (a stop after the pipeline's end: every row is saved by then)."""
    stop = Interrupted.of(caught)
    earlier = caught.__context__
    first = earlier if not stop.processed and isinstance(earlier, Interrupted) else stop
    return Interrupted(first.signum, saved, saved) if saved and not first.processed else first


def _prepare(
    cfg: LabelConfig, table: pa.Table | None, report: Reporter, weights: Future, held: ExitStack
) -> tuple[OutputDir, InputPlan, Books, int]:
    """The output taken (its lease held), the inputs cut into read units, the resume's
    count, Ray up where there is work: (output, inputs, books, inputs left to label)."""
    report(Snapshot.before("checking the output"))
    out = OutputDir(cfg.output)
    out.check(cfg.mode)
    lease = held.enter_context(out.lease(on_takeover=ray_session.end_leftovers))  # one writer at a time
    out.check(cfg.mode)  # again: another job may have written there before it let go
    if cfg.mode == "resume":
        repair.set_aside_fenced(out)
        repair.set_aside_damaged(out)
    report(Snapshot.before("listing the inputs"))
    plan = _plan_inputs(cfg, table)
    if cfg.compute.labels:
        weights.result()  # a --labels file that does not fit is refused before Ray starts
    start_ray = partial(_start_ray, cfg, report, lease, held)
    books, pending = Books.in_process(), len(plan.units)
    if cfg.mode == "resume" and plan.units:
        books, pending = _count_resume(cfg, out, plan, start_ray)
    if pending and books.local:  # (books on Ray: a resume counted there, Ray is up)
        start_ray()
        # A resume counted here hands its books over as they stand.
        books = Books.on_ray(books if cfg.mode == "resume" else None)
    return out, plan, books, pending


def _start_ray(cfg: LabelConfig, report: Reporter, lease: OutputLease, held: ExitStack) -> None:
    """Ray joined or started; a Ray of the job's own is stopped when the run ends, and noted
    in the lease: if the job dies, the job that takes the output over ends what its Ray left
    running (ray_session.end_leftovers)."""
    report(Snapshot.before("starting Ray"))
    if held.enter_context(pipeline.ray_for_the_job(cfg.execution.address)):
        session = ray_session.own_session()
        if session:
            lease.note(ray_session=session)


def _final_check(out: OutputDir, books: Books, saver: Saver, timeline: Timeline) -> tuple[OutputCheck, list]:
    """Every input exactly once? Then the run record's last word. Every row is saved by now:
    a signal waits for the check's end (raised inside pyarrow it would be a SystemError)."""
    repair.set_aside_fenced(out)  # parts a job that lost the lease made visible during this run
    checking = time.time()
    log.info("final check: every input has exactly one row?")
    with signals_deferred():
        check = check_output(out, books)
        timeline.check_s = time.time() - checking
        misnamed = out.misnamed_parts() if check.duplicates else []
        _record_finished(out, saver, check, timeline)
    return check, misnamed


def _record_finished(out: OutputDir, saver: Saver, check: OutputCheck, timeline: Timeline) -> None:
    """The run record's last word: when the run ended, its counts, and where its time went
    (readers tell a finished output from a partial one by it)."""
    now = time.time()
    finished = {
        "at": now,
        "launched": timeline.launched,
        "inputs": check.inputs,
        "rows": check.rows,
        "processed": saver.stats.rows,
        "complete": not (check.missing or check.duplicates),
        "phases": {k: round(v, 3) for k, v in timeline.phases(until=now).items()},
        "steady_images_per_s": round(timeline.steady_rate(saver.stats.rows), 3),
    }
    earlier = out.earlier_run.all_runs() if out.earlier_run else []
    out.record_run(dataclasses.replace(saver.record, finished=finished, runs=[*earlier, finished]))


def _saver(cfg: LabelConfig, out: OutputDir, resolved: ResolvedWeights, plan: InputPlan) -> Saver:
    """What saves the run's rows, with the run described in its footers and run record."""
    record = run_record(cfg.compute, cfg.execution.precision, resolved, [f.name for f in plan.extra_fields])
    if cfg.mode == "resume":
        out.check_resumable(record)
    schema = run_schema(cfg.compute, resolved, plan.extra_fields, record)
    return Saver(out, schema, rows_per_file(cfg, resolved), cfg.execution.checkpoint_every, cfg.mode, record)


def _execute(run: LabelRun, resolved: ResolvedWeights, plan: InputPlan, books: Books) -> None:
    cfg = run.cfg
    # A task per node asks for bf16 only where "auto" needs it; nothing is asked otherwise.
    cluster = ray_session.cluster(ask_bf16=cfg.execution.precision == "auto")
    execution = make_plan(cfg, resolved, cluster, local_inputs=plan.first_input is None or is_local(plan.first_input))
    pipeline.execute(execution, plan, books, run)


def plan_only(cfg: LabelConfig, calibrate: int = 0) -> list[str]:
    """What a run of `cfg` would do (`label --dry-run`): the plan on the cluster it would run
    on, how many inputs there are and how long they would take. The output's mode is
    checked and the weights resolved by name (nothing downloaded); the inputs are listed;
    nothing is written, but `calibrate` inputs labeled into a temporary folder to measure
    the rate."""
    check_weights_argument(cfg.compute.model, cfg.compute.weights)
    OutputDir(cfg.output).check(cfg.mode)
    resolved = _resolve_weights(cfg, verify=False)
    with pipeline.ray_for_the_job(cfg.execution.address):
        cluster = ray_session.cluster(ask_bf16=cfg.execution.precision == "auto")
        plan = make_plan(cfg, resolved, cluster, local_inputs=is_local(cfg.inputs[0]))
        count = estimate.count_inputs(_plan_inputs(cfg, None), sample=calibrate)
        rate = (
            estimate.calibrated_rate(cfg, count.sample, run_label, plan.batch_size)
            if calibrate and count.sample
            else guessed_rate(plan, cfg.compute.model)
        )
        return [*plan.lines(), count.line(), estimate_line(count, rate)]


def _count_resume(
    cfg: LabelConfig, out: OutputDir, plan: InputPlan, start_ray: Callable[[], None]
) -> tuple[Books, int]:
    """(books, inputs left to label) for a resume: counted in this process where it is small
    and local (a finished one then needs no Ray), else in Ray tasks (Ray started first)."""
    books: Books | None = load_done_once(out, Books.in_process) if counts_here(plan, out) else None
    pending = count_here(plan, books) if books is not None else None
    if books is None or pending is None:
        start_ray()
        books = load_done_once(out, Books.on_ray)
        pending = count_on_ray(plan, books)
    log.info("resume: %d inputs still to label", pending)
    outside = books.tally(with_done=True)["outside"]
    if pending and outside and not cfg.add_to_output:
        raise UsageError(
            f"--output {cfg.output} holds {outside} rows of inputs this run does not list: it is another job's "
            "output, or its inputs moved; resume it with its own INPUTs, choose another --output, or pass "
            "--add-to-output to add these INPUTs to it"
        )
    if pending:
        books.forget_claims()  # the pipeline's listing claims them again, as it finds them then
    return books, pending


def _resolve_weights(cfg: LabelConfig, verify: bool = True):
    """The weights, checked as workers will load them; a checkpoint is read (torch: seconds).
    `verify=False`: a torchvision release by its name only (nothing downloaded)."""
    from ..model.weights import resolve_weights

    compute = cfg.compute
    resolved = resolve_weights(compute.model, compute.weights, compute.preprocess, compute.labels, verify=verify)
    if cfg.compute.top_k > len(resolved.categories):
        raise UsageError(f"--top-k {cfg.compute.top_k} exceeds the model's {len(resolved.categories)} classes")
    return resolved
