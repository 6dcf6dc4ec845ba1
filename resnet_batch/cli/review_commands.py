"""The commands on a finished output: `report`, `export`, `neighbors`."""

from __future__ import annotations

import argparse
import os

from ..core import checks
from .console import Console
from .exits import EXIT_OK


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from ..review.report import build_report

    checks.whole_number("--per-class", args.per_class)
    checks.whole_number("--queue", args.queue, minimum=0)
    with console.row_progress("report") as progress:
        review = build_report(args.output, args.html, args.per_class, args.queue, args.neighbors, progress)
    console.print(
        f"{review.rows} rows, {len(review.classes)} classes, {sum(review.errors.values())} errors, "
        f"{review.flagged} to review; report written to {os.path.abspath(args.html)}"
    )
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

    checks.whole_number("--k", args.k)
    checks.fraction("--threshold", args.threshold, "cosine similarity")
    from ..output.targets import check_tool_target

    check_tool_target(args.target, "--output", folder=True)  # before the search, not after it
    with console.row_progress("neighbors: reading embeddings") as progress:
        table, info = neighbors.find_neighbors(args.output, args.k, args.threshold, progress)
    neighbors.write(table, info, args.target)
    grouped = table.column("group").drop_null()
    console.print(
        f"{info.rows} rows, index {info.index}, recall@{info.k} {info.recall_at_k:.3f}; "
        f"{len(set(grouped.to_pylist()))} near-duplicate groups ({len(grouped)} rows) at >= "
        f"{info.threshold}; written to {os.path.abspath(args.target)}"
    )
    return EXIT_OK
