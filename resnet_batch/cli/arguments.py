"""The command line's arguments: one parser for every command.

Values are checked where they become a job's settings (config.py), so a config file's
values and the flags are checked alike.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from ..config.options import OPTIONS, SECTIONS, Option
from .tool_arguments import add_jobs, add_review_tools, add_submit, command


def _add_job_args(p: argparse.ArgumentParser) -> None:
    """A job's options (config/options.py), in their --help sections. Every default is None,
    so that a config file's value survives unless a flag is given; `--config` is the command
    line's own."""
    sections = {title: p.add_argument_group(title) for title in SECTIONS}
    for option in OPTIONS:
        _add_option(sections[option.section], option)
        if option.name == "output":
            sections[option.section].add_argument(
                "--config", help="YAML job config with the same option names; flags win (default: none)"
            )


def _add_option(group: argparse._ArgumentGroup, option: Option) -> None:
    if option.name == "inputs":
        group.add_argument("inputs", nargs="*", metavar=option.metavar, help=option.help)
        return
    flags = option.flags or (option.flag,)
    if option.const is not None:  # a flag without a value
        group.add_argument(*flags, dest=option.name, action="store_const", const=option.const, help=option.described())
        return
    typed: dict = {"type": {"int": int, "float": float}[option.kind]} if option.kind in ("int", "float") else {}
    group.add_argument(*flags, dest=option.name, metavar=option.metavar, help=option.described(), **typed)


class _SuggestingParser(argparse.ArgumentParser):
    """An unknown option names the subcommand's nearest one ("--modle: did you mean --model?")."""

    given: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self.given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        words = message.removeprefix("unrecognized arguments: ").split() if "unrecognized" in message else []
        unknown = next((w.split("=")[0] for w in words if w.startswith("--")), None)
        if unknown:
            command = next((c for c in self.given if c in self._subcommands()), None)
            parser = self._subcommands()[command] if command else self
            near = _nearest(unknown, [o for o in parser._option_string_actions if o.startswith("--")])
            hint = f"; did you mean {near}?" if near else f"; `resnet-batch {command or ''} --help` lists them"
            self.exit(2, f"resnet-batch{' ' + command if command else ''}: error: unknown option {unknown}{hint}\n")
        super().error(message)

    def _subcommands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}


def _nearest(word: str, options: list[str]) -> str | None:
    """The option within two edits of `word` (a swap of two letters is one), the same length first."""
    scored = sorted((_edits(word, o), abs(len(o) - len(word)), o) for o in options)
    return scored[0][2] if scored and scored[0][0] <= 2 else None


def _edits(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours that make `a` into `b`."""
    d = [[i + j if not i * j else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    from .. import __version__

    parser = _SuggestingParser(prog="resnet-batch", description=description)
    parser.add_argument("--version", action="version", version=f"resnet-batch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    # The same flags after the subcommand; SUPPRESS keeps -v from undoing one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    common.add_argument("--version", action="version", version=f"resnet-batch {__version__}", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_label, _add_models, _add_eval, add_submit, add_review_tools, add_jobs):
        add(sub, common)
    return parser


def _add_label(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    label = command(sub, "label", common)
    _add_job_args(label)
    label.add_argument(
        "--summary-json",
        metavar="FILE",
        help="also write the summary as JSON to FILE (counts, errors by kind, seconds per phase, images/s, "
        "the output), for pipelines that call this command (default: none)",
    )
    label.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (model actors, GPUs and CPUs per stage, batch, decoder, decode share, memory) for "
        "the cluster the job would run on, how many inputs there are (listed for at most 20 s) and an "
        "estimate of the time, then exit; no weights are downloaded and nothing is written (default: off)",
    )
    label.add_argument(
        "--calibrate",
        type=int,
        metavar="N",
        help="with --dry-run: measure the rate by labeling the first N inputs into a temporary folder, "
        "and estimate the time from it (default: a rough guide from measured forward rates)",
    )


def _add_models(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    models = command(sub, "models", common)
    models.add_argument(
        "--json", action="store_true", help="one JSON object per model instead of a table (default: a table)"
    )


def _add_eval(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    evaluate = command(sub, "eval", common)
    _add_job_args(evaluate)
    evaluate.add_argument(
        "--label-column",
        help="manifest column with the class index or WordNet id (default: the WordNet id in each path)",
    )


VERBOSE_HELP = "debug logging, with Ray's own logs in the terminal (by default they go to a log file)"


def options_markdown() -> str:
    """The README's table of `label` options, from this parser: one source for both."""
    label = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["label"]
    rows = ["| option | what it sets (default) |", "| --- | --- |"]
    for group in label._action_groups:
        options = [
            a
            for a in group._group_actions
            if a.option_strings and "--help" not in a.option_strings and a.help != argparse.SUPPRESS
        ]
        if options and group.title != "options":
            rows.append(f"| **{group.title}** | |")
        for action in options:
            flags = ", ".join(f"`{flag}`" for flag in action.option_strings)
            rows.append(f"| {flags} | {(action.help or '').replace('|', chr(92) + '|')} |")
    return "\n".join(rows)
