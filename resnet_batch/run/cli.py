"""Label image collections with torchvision ResNets on Ray: top-k classes and pooled embeddings, one Parquet row per image.

Bad arguments exit 2 with one line; a run with an input lacking its row exits 1."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import traceback

from .console import Console, raise_on_signals
from ..core.errors import Interrupted, UsageError, WeightsUnavailableError, one_line, root_cause

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL_BASE = 128  # a job stopped by signal N exits 128 + N, as shells report it


def _add_label_args(p: argparse.ArgumentParser) -> None:
    # Every default is None so that a config file's value survives unless a flag is given.
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="directory, image file, glob, fsspec URI, or manifest (.txt/.csv/.parquet)")
    p.add_argument("--output", "-o", help="output Parquet dataset directory (local path or URI)")
    p.add_argument("--config", help="YAML job config with the same option names; flags win")
    p.add_argument("--model", help="resnet18|34|50|101|152, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, "
                   "wide_resnet50_2, wide_resnet101_2 (default resnet50)")
    p.add_argument("--weights", help="DEFAULT|IMAGENET1K_V1|IMAGENET1K_V2|none|PATH-or-URI (default DEFAULT)")
    p.add_argument("--preprocess", help="torchvision weights whose transforms() a checkpoint or "
                   "'none' uses (default IMAGENET1K_V1)")
    p.add_argument("--batch-size", type=int, help="images per model batch; 0 = automatic, the default: "
                   "256 on a GPU, on a CPU 32 (fp32) or 64 (bf16)")
    p.add_argument("--top-k", type=int, help="labels per image, 0 = no labels (default 5)")
    p.add_argument("--no-embeddings", dest="embeddings", action="store_const", const=False,
                   help="do not write the pooled embedding")
    p.add_argument("--embedding-dtype", help="float32|float16, of the pooled vectors (default float32)")
    p.add_argument("--features", help="comma-separated: pooled (the `embedding` column), c2, c3, c4, c5 "
                   "(each stage average-pooled, a column each) (default pooled)")
    p.add_argument("--spatial", help="c4|c5: also write that stage's whole feature map, float16, "
                   "as spatial_c4/spatial_c5 (stride 16/32)")
    p.add_argument("--crop", help="center|none: none keeps the whole image (shorter side resized, padded "
                   "to a few batch shapes; rows record scale and valid cells) (default center)")
    p.add_argument("--resize", type=int, help="with --crop none: shorter side in pixels (default: the weights' "
                   "own, e.g. 256)")
    p.add_argument("--review-below", type=float, metavar="P",
                   help="add needs_review: true where the top-1 probability is under P (0-1)")
    p.add_argument("--labels", help="class names for a checkpoint's outputs: a file with one name a line, "
                   "or JSON (a list or {id: name})")
    p.add_argument("--device", help="auto|cpu|cuda (default auto)")
    p.add_argument("--precision", help="auto|fp32|fp16|bf16 (default auto: bf16/fp16 where fast)")
    p.add_argument("--mode", help="error|overwrite|resume: when OUTPUT holds results (default error)")
    p.add_argument("--address", help="Ray address to join (default: start or join a local Ray)")
    p.add_argument("--path-column", help="manifest column holding image URIs (default path)")
    p.add_argument("--rows-per-file", type=int, help="rows per Parquet part file, at most (default 10000)")
    p.add_argument("--checkpoint-every", type=float, metavar="SECONDS",
                   help="save finished rows at least this often, whatever --rows-per-file (default 60)")
    p.add_argument("--progress-every", type=float, metavar="SECONDS",
                   help="seconds between progress lines when not in a terminal (default 30)")
    p.add_argument("--wait-for-resources", type=float, metavar="SECONDS",
                   help="how long the job may wait for CPUs or GPUs the cluster lacks (the progress line says "
                        "which), then fail with exit 2 (default 600)")
    p.add_argument("--num-workers", type=int, help="model actors (default one per GPU / CPU node)")
    p.add_argument("--threads-per-worker", type=int,
                   help="cores per CPU model actor, one single-threaded forward each (default: the node's); "
                        "torch threads per GPU actor (default 4)")
    p.add_argument("--io-threads", type=int, help="file-fetch threads per decode task")
    p.add_argument("--max-pixels", type=int, help="refuse images with more pixels (default 100000000)")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    p.add_argument("--decode", help="auto|cpu|gpu: where JPEGs are decoded (gpu: batched nvJPEG, resize and crop "
                   "in the model actor, within a grey level of the PIL reference; auto: gpu when the model runs "
                   "on GPUs and --crop center, else cpu) (default auto)")
    p.add_argument("--cpu-decode-share", type=float,
                   help="with GPU decoding: the fraction of JPEGs CPU tasks decode anyway, so a node's cores "
                        "and its GPU share the decoding (default 0)")


def _job_server_default() -> str | None:
    return os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-batch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, with Ray's own logs in the terminal (by default they go to a log file)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_label_args(sub.add_parser("label", help="label images: top-k classes and embeddings to Parquet"))
    models = sub.add_parser("models", help="list models, weights and embedding widths")
    models.add_argument("--json", action="store_true", help="one JSON object per model instead of a table")
    evaluate = sub.add_parser("eval", help="top-1/top-5 error on a labeled collection (ImageNet layouts)")
    _add_label_args(evaluate)
    evaluate.add_argument("--label-column", help="manifest column with the class index or WordNet id")

    submit = sub.add_parser("submit", help="submit a label job to a Ray cluster: submit --address URL -- label ...")
    submit.add_argument("--address", default=_job_server_default(),
                        help="the cluster's job server, e.g. http://HEAD:8265 (default $RAY_ADDRESS)")
    submit.add_argument("--wait", action="store_true", help="follow the logs and exit with the job's status")
    submit.add_argument("--working-dir", help="local directory uploaded as the job's working directory")
    submit.add_argument("--pip", nargs="+", action="extend", default=[], help="extra pip packages for the job")
    submit.add_argument("--submission-id", help="job id to use (default: generated)")
    submit.add_argument("--entrypoint-num-cpus", type=float, default=0, help="CPUs reserved for the driver (default 0: it mostly waits)")
    submit.add_argument("--entrypoint-num-gpus", type=float, default=0, help="GPUs reserved for the driver")
    submit.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="job metadata")

    report = sub.add_parser("report", help="a self-contained HTML page to review a labeling output")
    report.add_argument("output", metavar="OUTPUT", help="a label job's --output")
    report.add_argument("--html", required=True, metavar="FILE", help="the page to write")
    report.add_argument("--per-class", type=int, default=4,
                        help="thumbnails per class, least confident first (default 4; ~2 KB each)")
    report.add_argument("--queue", type=int, default=200, help="review-queue rows shown")
    report.add_argument("--neighbors", metavar="DIR", help="a `neighbors --output` folder: show duplicate groups")

    export = sub.add_parser("export", help="export an output to a labeling tool, a class-per-folder tree, or CSV")
    export.add_argument("output", metavar="OUTPUT", help="a label job's --output")
    export.add_argument("--format", required=True, help="label-studio|imagefolder|csv")
    export.add_argument("--output", dest="target", required=True, metavar="PATH", help="file (folder for imagefolder)")
    export.add_argument("--rows", default="all", help="all|review: every labeled row, or those with needs_review")
    export.add_argument("--copy", action="store_true", help="imagefolder: copy files instead of linking them")
    export.add_argument("--local-files-root",
                        help="label-studio: its LOCAL_FILES_DOCUMENT_ROOT; local paths are made relative to it "
                             "(default /, with a warning)")

    neighbors = sub.add_parser("neighbors", help="nearest neighbours of every row, and near-duplicate groups")
    neighbors.add_argument("output", metavar="OUTPUT", help="a label job's --output (with embeddings)")
    neighbors.add_argument("--k", type=int, default=10, help="neighbours per row (default 10)")
    neighbors.add_argument("--output", dest="target", required=True, metavar="DIR", help="folder for the results")
    neighbors.add_argument("--threshold", type=float, default=0.95,
                           help="cosine similarity from which two rows are near-duplicates (default 0.95)")

    jobs = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    jobs.add_argument("action", choices=["status", "logs", "stop"])
    jobs.add_argument("job_id", metavar="ID")
    jobs.add_argument("--address", default=_job_server_default())
    return parser


NOT_JOB_OPTIONS = ("command", "config", "verbose", "label_args", "label_column", "json")


def _job_config(args: argparse.Namespace, eval_defaults: bool = False):
    """LabelConfig from --config and flags (flags win)."""
    from .config import LabelConfig, load_config_file

    flags = {k: v for k, v in vars(args).items() if k not in NOT_JOB_OPTIONS}
    flags["inputs"] = flags["inputs"] or None
    file_values = load_config_file(args.config) if args.config else {}
    if eval_defaults and not (flags["output"] or file_values.get("output")):
        # eval's predictions go next to the user unless told otherwise, replaced on re-runs
        model = flags["model"] or file_values.get("model", "resnet50")
        weights = str(flags["weights"] or file_values.get("weights", "DEFAULT")).replace("/", "_")
        flags["output"] = f"eval-{model}-{weights}"
        flags["mode"] = flags["mode"] or file_values.get("mode", "overwrite")
    return LabelConfig.from_sources(file_values, flags)


def _run_with_progress(run, cfg, console: Console):
    from .summary import process_started_at

    with console.progress(cfg.progress_every) as report:
        return run(cfg, launched_at=process_started_at(), report=report)


def _refuse_memory_output(cfg) -> None:
    if cfg.output.startswith("memory://"):
        raise UsageError(f"--output {cfg.output}: memory:// lives only in this process and is gone when the command "
                         "exits; write to a local path or a bucket (memory:// is for the Python API)")


def cmd_label(args: argparse.Namespace, console: Console) -> int:
    from .pipeline import run_label

    cfg = _job_config(args)
    _refuse_memory_output(cfg)
    summary = _run_with_progress(run_label, cfg, console)
    for line in summary.lines():
        console.print(line)
    return EXIT_OK if summary.complete else EXIT_INCOMPLETE


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    from functools import partial

    from .pipeline import run_eval

    cfg = _job_config(args, eval_defaults=True)
    _refuse_memory_output(cfg)
    summary, report = _run_with_progress(partial(run_eval, label_column=args.label_column), cfg, console)
    for line in [*summary.lines(), *report.lines(), f"predictions written to {_shown_path(cfg.output)}"]:
        console.print(line)
    return EXIT_OK if summary.complete else EXIT_INCOMPLETE


def _shown_path(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def cmd_models(args: argparse.Namespace, console: Console) -> int:
    from ..model.models import describe_models

    rows = describe_models()
    if args.json:
        for row in rows:
            console.print(json.dumps(row))
        return EXIT_OK
    table = [("model", "default weights", "embedding", "c2/c3/c4/c5", "--weights")]
    table += [(r["model"], r["default"], str(r["embedding_dim"]), "/".join(map(str, r["stage_widths"].values())),
               ", ".join(r["weights"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        console.print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[4]]).rstrip())
    return EXIT_OK


def _require_address(args) -> str:
    if not args.address:
        raise UsageError("--address is required (the cluster's job server, e.g. http://HEAD:8265)")
    return args.address


def cmd_submit(args: argparse.Namespace, console: Console) -> int:
    from . import submit

    metadata = {}
    for item in args.metadata:
        if "=" not in item:
            raise UsageError(f"--metadata takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        metadata[key] = value
    sub = submit.Submission(
        address=_require_address(args), label_args=tuple(args.label_args), submission_id=args.submission_id,
        working_dir=args.working_dir, pip=tuple(args.pip), entrypoint_num_cpus=args.entrypoint_num_cpus,
        entrypoint_num_gpus=args.entrypoint_num_gpus, metadata=metadata,
    )
    job_id = submit.submit(sub)
    console.print(f"submitted {job_id}")
    if not args.wait:
        return EXIT_OK
    final = submit.follow(sub.address, job_id, out=console.out)
    console.print(f"job {job_id} {final}")
    return EXIT_OK if final == submit.TERMINAL_OK else EXIT_INCOMPLETE


def cmd_jobs(args: argparse.Namespace, console: Console) -> int:
    from . import submit

    address = _require_address(args)
    if args.action == "status":
        info = submit.status(address, args.job_id)
        progress = submit.last_progress_line(submit.logs(address, args.job_id))
        if progress:  # what the job is doing (or waiting for) now, from its own log
            info["progress"] = progress
        console.print(json.dumps(info))
        return EXIT_OK
    if args.action == "logs":
        console.out.write(submit.logs(address, args.job_id))
        return EXIT_OK
    stopped = submit.stop(address, args.job_id)
    console.print(f"job {args.job_id}: stop requested" if stopped else f"job {args.job_id} was not running")
    return EXIT_OK if stopped else EXIT_INCOMPLETE


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from ..review.report import build_report

    if args.per_class < 1 or args.queue < 0:
        raise UsageError("--per-class must be >= 1 and --queue >= 0")
    with console.row_progress("report") as progress:
        review = build_report(args.output, args.html, args.per_class, args.queue, args.neighbors, progress)
    console.print(f"{review.rows} rows, {len(review.classes)} classes, {sum(review.errors.values())} errors, "
                  f"{review.flagged} to review; report written to {os.path.abspath(args.html)}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from ..review.export import export

    with console.row_progress("export") as progress:
        count = export(args.output, args.format, args.target, args.rows, args.copy, args.local_files_root, progress)
    console.print(f"{count} rows exported as {args.format} to {os.path.abspath(args.target)}")
    if args.format == "label-studio":
        from ..review.export import config_path

        console.print(f"its labeling config (create the project with it): {os.path.abspath(config_path(args.target))}")
    return EXIT_OK


def cmd_neighbors(args: argparse.Namespace, console: Console) -> int:
    from ..review import neighbors

    if args.k < 1 or not 0 < args.threshold <= 1:
        raise UsageError("--k must be >= 1 and --threshold a cosine similarity in (0, 1]")
    from ..output.ownership import check_tool_target

    check_tool_target(args.target, "--output", folder=True)  # before the search, not after it
    with console.row_progress("neighbors: reading embeddings") as progress:
        table, info = neighbors.find_neighbors(args.output, args.k, args.threshold, progress)
    neighbors.write(table, info, args.target)
    grouped = table.column("group").drop_null()
    console.print(f"{info.rows} rows, index {info.index}, recall@{info.k} {info.recall_at_k:.3f}; "
                  f"{len(set(grouped.to_pylist()))} near-duplicate groups ({len(grouped)} rows) at >= "
                  f"{info.threshold}; written to {os.path.abspath(args.target)}")
    return EXIT_OK


COMMANDS = {"label": cmd_label, "eval": cmd_eval, "models": cmd_models, "submit": cmd_submit, "jobs": cmd_jobs,
            "report": cmd_report, "export": cmd_export, "neighbors": cmd_neighbors}


def resume_command(argv: list[str]) -> str:
    """The command line that finishes an interrupted run: the same one, with --mode resume."""
    args, i = [], 0
    while i < len(argv):
        if argv[i] == "--mode":
            i += 2
            continue
        if not argv[i].startswith("--mode="):
            args.append(argv[i])
        i += 1
    return shlex.join(["resnet-batch", *args, "--mode", "resume"])


def _split_job_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """submit ... -- label ...: what follows `--` is the submitted job's command line. For
    every other command `--` keeps its usual meaning (the rest are INPUTs, even if they
    start with a dash), which argparse gives it."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command == "submit" and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    raise_on_signals()  # first: a signal at any later moment stops the job the same way
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, label_args = _split_job_command(argv)
    args = build_parser().parse_args(argv)
    args.label_args = label_args
    console = Console(args.command, args.verbose)
    try:
        return COMMANDS[args.command](args, console)
    except (UsageError, WeightsUnavailableError) as exc:
        console.failed(str(exc))
        return EXIT_USAGE
    except Interrupted as stop:
        done = f"{stop.saved} images labeled and saved" + (
            f", {stop.processed - stop.saved} labeled but not saved" if stop.processed > stop.saved else "")
        console.print(f"stopped by {signal.Signals(stop.signum).name}: {done}; to finish: {resume_command(argv)}",
                      error=True)
        return EXIT_SIGNAL_BASE + stop.signum
    except Exception as exc:  # a bug or an environment failure: one line here, the traceback in the log
        traceback.print_exc()  # to the log file (or the terminal with -v)
        cause = root_cause(exc)
        console.failed(f"{type(cause).__name__}: {one_line(cause, limit=2000)}")  # whole: never cut mid-sentence
        return EXIT_INCOMPLETE
    finally:
        console.close()


def run() -> None:
    """The `resnet-batch` command: main(), then exit at once.

    Everything is saved, checked and stopped when main() returns; what the interpreter
    would still do is tear down torch's and Ray's modules, ~1.1 s on 2 cores for nothing.
    """
    code = main()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()  # a cluster this process joined: disconnect cleanly
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
