"""The arguments of the commands beside a job's: submit and jobs (a cluster's), report,
export and neighbors (on a finished output)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    summary: str  # its line in `resnet-batch --help`
    description: str  # the paragraph its own --help starts with
    example: str


SUBCOMMANDS = {
    "label": Subcommand(
        "label images: top-k classes and embeddings to Parquet",
        "Label every image the INPUTs name (folders are walked, .tar shards read member by member, "
        "manifests list paths or URIs) with a torchvision ResNet, one Parquet row per image: top-k "
        "classes, the pooled embedding and any --features / --spatial maps. Runs on a Ray of its own, or "
        "joins --address. Rows are saved every --checkpoint-every seconds; a stop keeps them, and --mode "
        "resume finishes the rest.",
        "resnet-batch label ./photos --output ./labels --model resnet50",
    ),
    "models": Subcommand(
        "list models, weights and embedding widths",
        "The backbones --model takes, their default and published --weights, the embedding width and the "
        "channels of the c2..c5 stages (--features, --spatial). Nothing is downloaded.",
        "resnet-batch models --json",
    ),
    "eval": Subcommand(
        "top-1/top-5 error on a labeled collection (ImageNet layouts)",
        "Label a collection whose true classes are known, then score top-1 and top-5 error with 95% "
        "intervals, beside torchvision's published figures. The class comes from a WordNet id in the "
        "image's folder or file name (val/n01440764/x.JPEG, ImageNet's layouts), or from a manifest's "
        "--label-column (a class index or a WordNet id). Predictions go to --output (default "
        "eval-MODEL-WEIGHTS in the current folder, --mode overwrite).",
        "resnet-batch eval /data/imagenet/val --model resnet50 --weights IMAGENET1K_V2",
    ),
    "submit": Subcommand(
        "submit a label job to a Ray cluster: submit --address URL -- label ...",
        "Send a `label` command (everything after --) to a Ray cluster's job server as a Ray job, with "
        "this resnet-batch shipped along; the cluster's image provides torch and Ray. Prints the job id "
        "and how to follow, stop and list it; --wait follows the logs and exits with the job's status.",
        "resnet-batch submit --address http://HEAD:8265 --wait -- label s3://b/images --output s3://b/labels",
    ),
    "report": Subcommand(
        "a self-contained HTML page to review a labeling output",
        "One HTML file (thumbnails inlined) to review a label job's output: the class histogram, the "
        "least confident images of each class, the review queue, the errors, and near-duplicate groups "
        "from `neighbors`.",
        "resnet-batch report ./labels --html review.html",
    ),
    "export": Subcommand(
        "export an output to a labeling tool, a class-per-folder tree, or CSV",
        "Turn a label job's output into what the next tool reads: a Label Studio task file with the top-k"
        " as predictions (and its labeling config beside it), an imagefolder tree (one folder per top-1 "
        "class, files linked or copied; tar members extracted), or a flat CSV of path, labels and scores.",
        "resnet-batch export ./labels --format label-studio --output tasks.json --rows review",
    ),
    "neighbors": Subcommand(
        "nearest neighbours of every row, and near-duplicate groups",
        "Find each row's --k nearest neighbours by cosine similarity of the pooled embeddings (exact on "
        "small outputs, an IVF index on large ones, with its measured recall), and group rows at or above"
        " --threshold as near-duplicates. Writes Parquet to its own --output folder, which `report "
        "--neighbors` shows.",
        "resnet-batch neighbors ./labels --output ./labels-neighbors --k 10",
    ),
    "jobs": Subcommand(
        "list, status, logs or stop of submitted jobs",
        "Manage the label jobs `submit` sent to a cluster. The job server is --address, else "
        "$RAY_ADDRESS, else the one the last `submit` on this machine used; the command says which.",
        "resnet-batch jobs list",
    ),
}


def command(sub: argparse._SubParsersAction, name: str, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """A subcommand whose --help gives a paragraph on what it does, one example and every default."""
    about = SUBCOMMANDS[name]
    return sub.add_parser(
        name,
        help=about.summary,
        description=about.description,
        epilog=f"example:\n  {about.example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )


def add_submit(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    submit = command(sub, "submit", common)
    submit.usage = "resnet-batch submit [-h] [--address URL] [--wait] [options] -- label INPUT ... --output OUTPUT"
    submit.add_argument(
        "--address",
        default=None,
        help="the cluster's job server, e.g. http://HEAD:8265 (default: $RAY_ADDRESS, else the last submit's)",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow the logs and exit with the job's status (default: return once submitted)",
    )
    submit.add_argument("--working-dir", help="local directory uploaded as the job's working directory (default: none)")
    submit.add_argument(
        "--paths-on-cluster",
        action="store_true",
        help="the job's local paths are mounted at the same place on every node: send them as they are "
        "(default: a job server on another machine gets small local files shipped, and local data refused)",
    )
    submit.add_argument(
        "--pip", nargs="+", action="extend", default=[], help="extra pip packages for the job (default: none)"
    )
    submit.add_argument("--submission-id", help="job id to use (default: generated)")
    submit.add_argument(
        "--entrypoint-num-cpus", type=float, default=0, help="CPUs reserved for the driver (default 0: it mostly waits)"
    )
    submit.add_argument("--entrypoint-num-gpus", type=float, default=0, help="GPUs reserved for the driver (default 0)")
    submit.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="job metadata, repeatable (default: none)"
    )


def add_jobs(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    jobs = command(sub, "jobs", common)
    jobs.add_argument(
        "action",
        choices=["list", "status", "logs", "stop"],
        help="list: every job submitted (id, status, start, progress, output); status: one job's state "
        "and latest progress line (with its time) as JSON; logs: its whole log (--follow: to its end); stop: "
        "SIGTERM, then SIGKILL "
        "after 45 s (the job saves its finished rows)",
    )
    jobs.add_argument(
        "job_id",
        metavar="ID",
        nargs="?",
        help="the job's submission id, as `submit` printed it (status, logs and stop)",
    )
    jobs.add_argument(
        "--address",
        default=None,
        help="the cluster's job server, e.g. http://HEAD:8265 (default: $RAY_ADDRESS, else the last submit's)",
    )
    jobs.add_argument(
        "--follow",
        action="store_true",
        help="with logs: stream the log until the job ends, then say how it ended (default: what it has so far)",
    )


def add_review_tools(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    for add in (_add_report, _add_export, _add_neighbors):
        add(sub, common)


def _add_report(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    report = command(sub, "report", common)
    report.add_argument(
        "output", metavar="LABELS", help="the folder (or bucket prefix) a label job wrote: its --output"
    )
    report.add_argument("--html", required=True, metavar="FILE", help="the page to write")
    report.add_argument(
        "--per-class", type=int, default=4, help="thumbnails per class, least confident first (default 4; ~2 KB each)"
    )
    report.add_argument("--queue", type=int, default=200, help="review-queue rows shown (default 200)")
    report.add_argument(
        "--neighbors", metavar="DIR", help="a `neighbors --output` folder: show duplicate groups (default: none)"
    )


def _add_export(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    export = command(sub, "export", common)
    export.add_argument(
        "output", metavar="LABELS", help="the folder (or bucket prefix) a label job wrote: its --output"
    )
    export.add_argument("--format", required=True, help="label-studio|imagefolder|csv")
    export.add_argument("--output", dest="target", required=True, metavar="PATH", help="file (folder for imagefolder)")
    export.add_argument(
        "--rows", default="all", help="all|review: every labeled row, or those with needs_review (default all)"
    )
    export.add_argument(
        "--copy", action="store_true", help="imagefolder: copy files instead of linking them (default: symlinks)"
    )
    export.add_argument(
        "--local-files-root",
        help="label-studio: its LOCAL_FILES_DOCUMENT_ROOT; local paths are made relative to it "
        "(default /, with a warning)",
    )


def _add_neighbors(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    neighbors = command(sub, "neighbors", common)
    neighbors.add_argument(
        "output",
        metavar="LABELS",
        help="the folder (or bucket prefix) a label job wrote, with embeddings: its --output",
    )
    neighbors.add_argument("--k", type=int, default=10, help="neighbours per row (default 10)")
    neighbors.add_argument("--output", dest="target", required=True, metavar="DIR", help="folder for the results")
    neighbors.add_argument(
        "--threshold",
        type=float,
        default=0.95,
        help="cosine similarity from which two rows are near-duplicates (default 0.95)",
    )
