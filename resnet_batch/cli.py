"""Command line: a thin layer over the library. Errors in arguments exit 2 with one line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .errors import UsageError, WeightsUnavailableError

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2


def _add_label_args(p: argparse.ArgumentParser) -> None:
    # Every default is None so that a config file's value survives unless a flag is given.
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="directory, image file, glob, fsspec URI, or manifest (.txt/.csv/.parquet)")
    p.add_argument("--output", "-o", help="output Parquet dataset directory (local path or URI)")
    p.add_argument("--config", help="YAML job config with the same option names; flags win")
    p.add_argument("--model", help="resnet18|resnet34|resnet50|resnet101|resnet152 (default resnet50)")
    p.add_argument("--weights", help="DEFAULT|IMAGENET1K_V1|IMAGENET1K_V2|none|PATH-or-URI (default DEFAULT)")
    p.add_argument("--preprocess", help="torchvision weights whose transforms() a checkpoint or "
                   "'none' uses (default IMAGENET1K_V1)")
    p.add_argument("--batch-size", type=int, help="images per model batch (default 256 GPU; CPU 32 fp32, 64 bf16)")
    p.add_argument("--top-k", type=int, help="labels per image, 0 = no labels (default 5)")
    p.add_argument("--no-embeddings", dest="embeddings", action="store_const", const=False,
                   help="do not write the pooled embedding")
    p.add_argument("--embedding-dtype", help="float32|float16 (default float32)")
    p.add_argument("--device", help="auto|cpu|cuda (default auto)")
    p.add_argument("--precision", help="auto|fp32|fp16|bf16 (default auto: bf16/fp16 where fast)")
    p.add_argument("--mode", help="error|overwrite|resume: when OUTPUT holds results (default error)")
    p.add_argument("--address", help="Ray address to join (default: start or join a local Ray)")
    p.add_argument("--path-column", help="manifest column holding image URIs (default path)")
    p.add_argument("--rows-per-file", type=int, help="rows per Parquet part file (default 10000)")
    p.add_argument("--num-workers", type=int, help="model actors (default one per GPU / CPU node)")
    p.add_argument("--threads-per-worker", type=int,
                   help="cores per CPU model actor, one single-threaded forward each (default: the node's); "
                        "torch threads per GPU actor (default 4)")
    p.add_argument("--io-threads", type=int, help="file-fetch threads per decode task")
    p.add_argument("--max-pixels", type=int, help="refuse images with more pixels (default 100000000)")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    p.add_argument("--decode", help="cpu|gpu: where JPEGs are decoded (gpu = nvJPEG in the model actor; "
                   "resized on tensors, close to but not bit-equal with the PIL reference) (default cpu)")


def _job_server_default() -> str | None:
    return os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-batch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_label_args(sub.add_parser("label", help="label images: top-k classes and embeddings to Parquet"))
    sub.add_parser("models", help="list models, weights and embedding widths")
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

    jobs = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    jobs.add_argument("action", choices=["status", "logs", "stop"])
    jobs.add_argument("job_id", metavar="ID")
    jobs.add_argument("--address", default=_job_server_default())
    return parser


NOT_JOB_OPTIONS = ("command", "config", "verbose", "label_args", "label_column")


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


def cmd_label(args: argparse.Namespace) -> int:
    from .pipeline import run_label

    summary = run_label(_job_config(args))
    for line in summary.lines():
        print(line)
    return EXIT_OK if summary.complete else EXIT_INCOMPLETE


def cmd_eval(args: argparse.Namespace) -> int:
    from .pipeline import run_eval

    cfg = _job_config(args, eval_defaults=True)
    summary, report = run_eval(cfg, args.label_column)
    for line in [*summary.lines(), *report.lines(), f"predictions: {cfg.output}"]:
        print(line)
    return EXIT_OK if summary.complete else EXIT_INCOMPLETE


def cmd_models(args: argparse.Namespace) -> int:
    from .models import describe_models

    for row in describe_models():
        print(json.dumps(row))
    return EXIT_OK


def _require_address(args) -> str:
    if not args.address:
        raise UsageError("--address is required (the cluster's job server, e.g. http://HEAD:8265)")
    return args.address


def cmd_submit(args: argparse.Namespace) -> int:
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
    print(f"submitted {job_id}", flush=True)
    if not args.wait:
        return EXIT_OK
    final = submit.follow(sub.address, job_id)
    print(f"job {job_id} {final}")
    return EXIT_OK if final == submit.TERMINAL_OK else EXIT_INCOMPLETE


def cmd_jobs(args: argparse.Namespace) -> int:
    from . import submit

    address = _require_address(args)
    if args.action == "status":
        info = submit.status(address, args.job_id)
        print(json.dumps(info))
        return EXIT_OK
    if args.action == "logs":
        print(submit.logs(address, args.job_id), end="")
        return EXIT_OK
    return EXIT_OK if submit.stop(address, args.job_id) else EXIT_INCOMPLETE


COMMANDS = {"label": cmd_label, "eval": cmd_eval, "models": cmd_models, "submit": cmd_submit, "jobs": cmd_jobs}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    label_args: list[str] = []
    if "--" in argv:  # submit ... -- label ...: everything after -- is the job's command line
        cut = argv.index("--")
        argv, label_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    args.label_args = label_args
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except (UsageError, WeightsUnavailableError) as exc:
        print(f"resnet-batch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
