"""Command line: a thin layer over the library. Errors in arguments exit 2 with one line."""

from __future__ import annotations

import argparse
import json
import logging
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
    p.add_argument("--batch-size", type=int, help="images per model batch (default 256 GPU, 32 CPU)")
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
    p.add_argument("--threads-per-worker", type=int, help="torch threads per CPU actor")
    p.add_argument("--io-threads", type=int, help="file-fetch threads per decode task")
    p.add_argument("--max-pixels", type=int, help="refuse images with more pixels (default 100000000)")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-batch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_label_args(sub.add_parser("label", help="label images: top-k classes and embeddings to Parquet"))
    sub.add_parser("models", help="list models, weights and embedding widths")
    return parser


def cmd_label(args: argparse.Namespace) -> int:
    from .config import LabelConfig, load_config_file
    from .pipeline import run_label

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "verbose")}
    if not flags["inputs"]:
        flags["inputs"] = None
    file_values = load_config_file(args.config) if args.config else {}
    cfg = LabelConfig.from_sources(file_values, flags)
    summary = run_label(cfg)
    for line in summary.lines():
        print(line)
    return EXIT_OK if summary.complete else EXIT_INCOMPLETE


def cmd_models(args: argparse.Namespace) -> int:
    from .models import describe_models

    for row in describe_models():
        print(json.dumps(row))
    return EXIT_OK


COMMANDS = {"label": cmd_label, "models": cmd_models}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
