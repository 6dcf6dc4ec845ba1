"""Label image collections with torchvision ResNets on Ray: top-k classes and pooled embeddings,
one Parquet row per image.

Bad arguments exit 2 with one line; a run with an input lacking its row exits 1."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core import checks
from ..core.columns import EMBEDDING
from ..core.errors import (
    Interrupted,
    LeaseLost,
    SaveFailed,
    UsageError,
    WeightsUnavailableError,
    one_line,
    root_cause,
)
from . import cluster_jobs, review_commands
from .arguments import build_parser
from .command_line import resume_command, split_job_command
from .console import Console, print_table, raising_on_signals
from .exits import EXIT_INCOMPLETE, EXIT_OK, EXIT_SIGNAL_BASE, EXIT_USAGE
from .summary_text import summary_json, summary_lines

if TYPE_CHECKING:
    from ..config.label_config import LabelConfig


def _job_config(args: argparse.Namespace, eval_defaults: bool = False):
    """LabelConfig from --config and flags (flags win): the job's options are those the
    option records name; the rest of the arguments are the command line's own."""
    from ..config.config_file import load_config_file
    from ..config.label_config import LabelConfig
    from ..config.options import BY_NAME, default

    flags = {k: v for k, v in vars(args).items() if k in BY_NAME}
    flags["inputs"] = flags["inputs"] or None
    file_values = load_config_file(args.config) if args.config else {}
    if eval_defaults and not (flags["output"] or file_values.get("output")):
        # eval's predictions go next to the user unless told otherwise, replaced on re-runs
        model = flags["model"] or file_values.get("model", default("model"))
        weights = str(flags["weights"] or file_values.get("weights", default("weights"))).replace("/", "_")
        flags["output"] = f"eval-{model}-{weights}"
        flags["mode"] = flags["mode"] or file_values.get("mode", "overwrite")
    return LabelConfig.from_sources(file_values, flags)


def _run_with_progress(run: Callable, cfg: LabelConfig, console: Console):
    from .. import LAUNCHED_AT

    with console.progress(cfg.execution.progress_every, LAUNCHED_AT) as report:
        return run(cfg, launched_at=LAUNCHED_AT, report=report)


def _refuse_memory_output(cfg: LabelConfig) -> None:
    if cfg.output.startswith("memory://"):
        raise UsageError(
            f"--output {cfg.output}: memory:// lives only in this process and is gone when the command "
            "exits; write to a local path or a bucket (memory:// is for the Python API)"
        )


def cmd_label(args: argparse.Namespace, console: Console) -> int:
    from ..run.job import plan_only, run_label

    cfg = _job_config(args)
    _refuse_memory_output(cfg)
    if args.calibrate is not None and not args.dry_run:
        raise UsageError("--calibrate N goes with --dry-run: it measures the rate the plan's estimate uses")
    if args.dry_run:
        checks.whole_number("--calibrate", args.calibrate or 0, minimum=0)
        for line in plan_only(cfg, calibrate=args.calibrate or 0):
            console.print(line)
        return EXIT_OK
    summary = _run_with_progress(run_label, cfg, console)
    for line in summary_lines(summary):
        console.print(line)
    if args.summary_json:
        _write_summary(args.summary_json, summary_json(summary, cfg.output))
    return EXIT_OK if summary.complete else EXIT_INCOMPLETE


def _write_summary(path: str, summary: dict) -> None:
    """--summary-json: written whole or not at all (a special file, e.g. /dev/stdout, written through)."""
    from ..core.storage import replaced_atomically

    with replaced_atomically(path) as (tmp,), open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    from functools import partial

    from ..run.job import run_eval

    cfg = _job_config(args, eval_defaults=True)
    _refuse_memory_output(cfg)
    summary, report = _run_with_progress(partial(run_eval, label_column=args.label_column), cfg, console)
    for line in [*summary_lines(summary), *report.lines(), f"predictions written to {_shown_path(cfg.output)}"]:
        console.print(line)
    return EXIT_OK if summary.complete else EXIT_INCOMPLETE


def _shown_path(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    from ..model.registry import describe_models

    rows = describe_models()
    if args.json:
        for row in rows:
            console.print(json.dumps(row))
        return EXIT_OK
    table = [("model", "default weights", EMBEDDING, "c2/c3/c4/c5", "--weights")]
    table += [
        (
            r["model"],
            r["default"],
            str(r["embedding_dim"]),
            "/".join(map(str, r["stage_widths"].values())),
            ", ".join(r["weights"]),
        )
        for r in rows
    ]
    print_table(console, table)
    return EXIT_OK


COMMANDS = {
    "label": cmd_label,
    "eval": cmd_eval,
    "models": cmd_models,
    "submit": cluster_jobs.cmd_submit,
    "jobs": cluster_jobs.cmd_jobs,
    "report": review_commands.cmd_report,
    "export": review_commands.cmd_export,
    "neighbors": review_commands.cmd_neighbors,
}


def main(argv: list[str] | None = None) -> int:
    """The command in this process, which it leaves as found: signal handlers, descriptors,
    and no connection to a Ray it joined."""
    with raising_on_signals():  # first: a signal at any later moment stops the job the same way
        argv = list(sys.argv[1:] if argv is None else argv)
        argv, label_args = split_job_command(argv)
        args = build_parser(__doc__).parse_args(argv)
        args.label_args = label_args
        console = Console(args.command, args.verbose)
        try:
            return _command(args, console, argv)
        except BaseException as exc:  # escaped the handlers (a signal while one was handled): still one line
            traceback.print_exc()
            signum = Interrupted.of(exc).signum if isinstance(exc, KeyboardInterrupt) else None
            console.failed(
                f"stopped by {signal.Signals(signum).name}" if signum else f"{type(exc).__name__}: {one_line(exc)}"
            )
            return EXIT_SIGNAL_BASE + signum if signum else EXIT_INCOMPLETE
        finally:
            console.close()


def _command(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    """The command, its failures each as one line and an exit status."""
    try:
        return COMMANDS[args.command](args, console)
    except (UsageError, WeightsUnavailableError) as exc:
        # Raised in a Ray task: its own words (one line), not the traceback and advice Ray adds.
        console.failed(str(root_cause(exc)).splitlines()[0])
        return EXIT_USAGE
    except KeyboardInterrupt as caught:
        stop = Interrupted.of(caught)
        done = f"{stop.saved} images labeled and saved" + (
            f", {stop.processed - stop.saved} labeled but not saved" if stop.processed > stop.saved else ""
        )
        console.print(
            f"stopped by {signal.Signals(stop.signum).name}: {done}; to finish: {resume_command(argv)}", error=True
        )
        return EXIT_SIGNAL_BASE + stop.signum
    except BrokenPipeError:  # `... | head` read what it wanted: no error, and nothing more to print
        os.dup2(os.open(os.devnull, os.O_WRONLY), console.out.fileno())
        return EXIT_OK
    except LeaseLost as lost:
        console.failed(str(lost))
        return EXIT_INCOMPLETE
    except SaveFailed as failed:
        traceback.print_exc()  # to the log file
        if failed.unreachable:
            console.failed(
                f"{type(failed.cause).__name__}: {failed}: the store stopped answering; this run saved "
                f"{failed.on_disk} rows before it stopped; once it answers: {resume_command(argv)}"
            )
        elif failed.on_disk is None:
            console.failed(f"{type(failed.cause).__name__}: {failed}: the output is gone (removed during the run?)")
        else:
            console.failed(
                f"{type(failed.cause).__name__}: {failed}: the output holds {failed.on_disk} rows; once there is "
                f"room: {resume_command(argv)}"
            )
        return EXIT_INCOMPLETE
    except Exception as exc:  # a bug or an environment failure: one line here, the traceback in the log
        traceback.print_exc()  # to the log file (or the terminal with -v)
        cause = root_cause(exc)
        console.failed(f"{type(cause).__name__}: {one_line(cause, limit=2000)}")  # whole: never cut mid-sentence
        return EXIT_INCOMPLETE


def run() -> None:
    """The `resnet-batch` command: main(), then exit at once.

    Everything is saved, checked and stopped when main() returns; what the interpreter
    would still do is tear down torch's and Ray's modules, ~1.1 s on 2 cores for nothing.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # a reader that closed the pipe: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
