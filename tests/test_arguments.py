"""The command line's parser and help, in-process: global flags anywhere, a version, and
every subcommand's help with a description, an example and each default."""

from __future__ import annotations

import argparse
import json

import pytest

import resnet_batch
from resnet_batch.cli.arguments import build_parser
from resnet_batch.cli.command_line import resume_command


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("argv", [["-v", "models"], ["models", "-v"], ["models", "--verbose"]])
def test_verbose_works_before_and_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).verbose is True


def test_verbose_is_off_unless_given():
    assert build_parser().parse_args(["models"]).verbose is False
    assert build_parser().parse_args(["label", "x", "-o", "y"]).verbose is False


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"resnet-batch {resnet_batch.__version__}"


@pytest.mark.parametrize("name", sorted(subcommands(build_parser())))
def test_every_subcommand_has_a_description_an_example_and_its_defaults(name):
    command = subcommands(build_parser())[name]
    text = command.format_help()
    assert command.description and len(command.description) > 80, "a paragraph on what it does"
    assert f"example:\n  resnet-batch {name}" in text
    for action in command._actions:
        if (
            action.option_strings
            and action.help not in (None, argparse.SUPPRESS)
            and "--help" not in action.option_strings
            and "--verbose" not in action.option_strings
        ):
            says = action.help.lower()
            assert "default" in says or "required" in says or action.required, (
                f"{name} {action.option_strings[0]}: no default in its help"
            )


def test_submit_usage_shows_the_label_command():
    assert "-- label INPUT" in subcommands(build_parser())["submit"].format_usage()


def test_a_stopped_cluster_job_is_resumed_where_it_ran(monkeypatch):
    argv = ["label", "s3://b/in", "--output", "s3://b/out", "--mode", "error"]
    assert resume_command(argv) == "resnet-batch label s3://b/in --output s3://b/out --mode resume"
    job = {"metadata": {"tool": "resnet-batch", "job_server": "http://head:8265"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert resume_command(argv) == (
        "resnet-batch submit --address http://head:8265 -- label s3://b/in --output s3://b/out --mode resume"
    )


def test_the_readmes_options_table_is_the_parsers():
    from pathlib import Path

    from resnet_batch.cli.arguments import options_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("(resnet_batch/cli/arguments.py options_markdown) -->\n", 1)[1].split("\n<!-- end", 1)[0]
    assert table == options_markdown(), (
        "the README's label options differ from `label --help`: paste "
        "python -c 'from resnet_batch.cli.arguments import options_markdown as m; "
        "print(m())'"
    )


def test_the_resume_command_runs_as_printed(tmp_path):
    """`--mode resume` before a `--` (after it, every word is an INPUT); a name whose bytes
    are not UTF-8 in bash's $'...' quoting, which the shell turns back into those bytes."""
    import subprocess

    argv = ["label", "--output", "o", "--", "-dash.jpg", "caf\udce9.jpg", "it's"]
    line = resume_command(argv)
    assert line == "resnet-batch label --output o --mode resume -- -dash.jpg $'caf\\xe9.jpg' 'it'\"'\"'s'"
    echoed = subprocess.run(["bash", "-c", f"printf '%s\\0' {line}"], capture_output=True, check=True, cwd=tmp_path)
    words = echoed.stdout.split(b"\0")[:-1]
    assert words == [b"resnet-batch", b"label", b"--output", b"o", b"--mode", b"resume", b"--", b"-dash.jpg"] + [
        b"caf\xe9.jpg",
        b"it's",
    ]


def test_label_studio_opens_the_file_named_not_its_spelling():
    from resnet_batch.review.export import label_studio_image

    latin1, spelled = "/data/caf\\xe9.jpg", "/data/caf\\\\xe9.jpg"  # identity.as_text's spellings
    assert label_studio_image(latin1, "/") == "/data/local-files/?d=data/caf%E9.jpg"
    assert label_studio_image(spelled, "/") == "/data/local-files/?d=data/caf%5Cxe9.jpg"
    assert label_studio_image("/data/a b&c.jpg", "/data") == "/data/local-files/?d=a%20b%26c.jpg"
