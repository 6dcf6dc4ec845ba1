"""The command line as a person meets it in a terminal or a pipe, with no job run: a closed
pipe is a normal end, a mistyped option names the nearest one, --version works after a
subcommand, and a model's name is taken in any case."""

from __future__ import annotations

import subprocess

from resnet_batch.config.label_config import LabelConfig

from .helpers import RESNET_BATCH

COMMAND = " ".join(RESNET_BATCH)


def test_a_closed_pipe_is_a_normal_end():
    for _ in range(4):  # the race between the reader closing and the writer flushing: tried a few times
        done = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {COMMAND} models --json | head -1"], capture_output=True, text=True
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert done.stdout.startswith('{"model": "resnet18"')


def test_a_mistyped_option_names_the_nearest(tmp_path):
    for typed, nearest in (("--modle", "--model"), ("--batchsize", "--batch-size"), ("--outptu", "--output")):
        done = subprocess.run(
            [*RESNET_BATCH, "label", str(tmp_path), "--output", str(tmp_path / "o"), typed, "x"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [
            f"resnet-batch label: error: unknown option {typed}; did you mean {nearest}?"
        ], done.stderr
    far = subprocess.run([*RESNET_BATCH, "label", str(tmp_path), "--zzzzzz"], capture_output=True, text=True)
    assert far.returncode == 2 and "`resnet-batch label --help` lists them" in far.stderr


def test_version_after_a_subcommand():
    for argv in (["--version"], ["label", "--version"], ["report", "--version"]):
        done = subprocess.run([*RESNET_BATCH, *argv], capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout.startswith("resnet-batch "), (argv, done.stderr)


def test_a_models_name_in_any_case():
    assert LabelConfig.of(inputs=("x",), output="y", model="ResNet18").compute.model == "resnet18"


def test_a_tools_job_folder_is_not_called_output():
    """report, export and neighbors take the job's folder (LABELS) and write to --output/--html."""
    for command in ("report", "export", "neighbors"):
        usage = subprocess.run([*RESNET_BATCH, command, "--help"], capture_output=True, text=True).stdout
        assert " LABELS" in usage and "OUTPUT" not in usage.replace("--output OUTPUT", ""), (command, usage)
