"""The command line's arguments: one parser for every command.

Values are checked where they become a job's settings (config.py), so a config file's
values and the flags are checked alike.
"""

from __future__ import annotations

import argparse
import os


def _add_label_args(p: argparse.ArgumentParser) -> None:
    # Every default is None so that a config file's value survives unless a flag is given.
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="directory, image file, glob, fsspec URI, or manifest (.txt/.csv/.parquet)")
    p.add_argument("--output", "-o", help="output Parquet dataset directory (local path or URI)")
    p.add_argument("--config", help="YAML job config with the same option names; flags win")
    p.add_argument("--model", help="resnet18|34|50|101|152, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, "
                   "wide_resnet50_2, wide_resnet101_2 (default resnet50), or none: the null model, a benchmark "
                   "aid that runs no network and writes resnet50's columns, filled with constants")
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


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """How and where the job runs; what it computes is _add_label_args'."""
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
    p.add_argument("--cpu-decode-share",
                   help="auto|FRACTION: with GPU decoding, the fraction of JPEGs CPU tasks decode anyway, so a "
                        "node's cores and its GPU share the decoding; auto sets it from the decode and forward "
                        "rates measured as the job runs (default auto)")


def _job_server_default() -> str | None:
    return os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-batch", description=description)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, with Ray's own logs in the terminal (by default they go to a log file)")
    sub = parser.add_subparsers(dest="command", required=True)
    label = sub.add_parser("label", help="label images: top-k classes and embeddings to Parquet")
    _add_label_args(label)
    _add_run_args(label)
    models = sub.add_parser("models", help="list models, weights and embedding widths")
    models.add_argument("--json", action="store_true", help="one JSON object per model instead of a table")
    evaluate = sub.add_parser("eval", help="top-1/top-5 error on a labeled collection (ImageNet layouts)")
    _add_label_args(evaluate)
    _add_run_args(evaluate)
    evaluate.add_argument("--label-column", help="manifest column with the class index or WordNet id")
    _add_submit(sub)
    _add_review_tools(sub)
    jobs = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    jobs.add_argument("action", choices=["status", "logs", "stop"])
    jobs.add_argument("job_id", metavar="ID")
    jobs.add_argument("--address", default=_job_server_default())
    return parser


def _add_submit(sub) -> None:
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


def _add_review_tools(sub) -> None:
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
