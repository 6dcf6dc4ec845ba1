"""The `submit` and `jobs` commands: a label job sent to a Ray cluster's job server with what
it needs, followed, listed, stopped; which job server, remembered per user; what a job's
log says of its progress. The job server itself is reached through run/jobs_client.py."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..core.errors import Interrupted, UsageError
from .console import Console, print_table
from .exits import EXIT_INCOMPLETE, EXIT_OK, EXIT_SIGNAL_BASE


def _job_server(args: argparse.Namespace, console: Console) -> str:
    address, source = job_server(args.address)
    if source != "--address":
        console.print(f"job server {address} ({source})", error=True)
    return address


def cmd_submit(args: argparse.Namespace, console: Console) -> int:
    from ..run import jobs_client
    from . import shipping

    metadata = {}
    for item in args.metadata:
        if "=" not in item:
            raise UsageError(f"--metadata takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        metadata[key] = value
    address = _job_server(args, console)
    shipment = shipping.Shipment(list(args.label_args), args.working_dir)
    if args.label_args and not args.paths_on_cluster and not shipping.job_server_is_here(address):
        shipment = shipping.prepare(list(args.label_args), address, args.working_dir)
    sub = Submission(
        address=address,
        label_args=tuple(shipment.label_args),
        submission_id=args.submission_id,
        working_dir=shipment.working_dir,
        pip=tuple(args.pip),
        entrypoint_num_cpus=args.entrypoint_num_cpus,
        entrypoint_num_gpus=args.entrypoint_num_gpus,
        metadata=metadata,
    )
    try:
        job_id = jobs_client.submit(
            sub.address,
            sub.entrypoint(),
            sub.runtime_env(),
            sub.metadata_sent(),
            submission_id=sub.submission_id,
            entrypoint_num_cpus=sub.entrypoint_num_cpus,
            entrypoint_num_gpus=sub.entrypoint_num_gpus,
        )
    finally:
        if shipment.working_dir != args.working_dir:  # the upload is done: the shipped copies go
            shutil.rmtree(shipment.working_dir or "", ignore_errors=True)
    remember_job_server(sub.address)
    console.print(f"submitted {job_id}")
    if not args.wait:
        at = shlex.quote(sub.address)
        for what, command in (
            ("follow", f"jobs logs {job_id} --follow"),
            ("status", f"jobs status {job_id}"),
            ("stop", f"jobs stop {job_id}"),
            ("list", "jobs list"),
        ):
            console.print(f"  {what + ':':8}resnet-batch {command} --address {at}")
        return EXIT_OK
    return _follow_to_the_end(console, sub.address, job_id)


def _follow_to_the_end(console: Console, address: str, job_id: str) -> int:
    """The job's log until it ends, then its status; stopping this follower stops only it."""
    from ..run import jobs_client

    try:
        final = jobs_client.follow(address, job_id, out=console.out)
    except KeyboardInterrupt as caught:
        at = shlex.quote(address)
        console.print(
            f"stopped following {job_id}, which keeps running on the cluster; follow it: resnet-batch jobs logs "
            f"{job_id} --follow --address {at}; stop it: resnet-batch jobs stop {job_id} --address {at}",
            error=True,
        )
        return EXIT_SIGNAL_BASE + Interrupted.of(caught).signum
    except jobs_client.JobServerLost as lost:
        console.failed(str(lost))
        return EXIT_INCOMPLETE
    console.print(f"job {job_id} {final}")
    return EXIT_OK if final == jobs_client.TERMINAL_OK else EXIT_INCOMPLETE


def cmd_jobs(args: argparse.Namespace, console: Console) -> int:
    from ..run import jobs_client

    if args.action != "list" and not args.job_id:
        raise UsageError(f"jobs {args.action} needs the job's ID (`resnet-batch jobs list` shows them)")
    address = _job_server(args, console)
    if args.action == "list":
        rows = jobs_client.list_jobs(address)
        table = [("ID", "STATUS", "START", "PROGRESS", "OUTPUT")]
        table += [
            (r["id"], r["status"], r["start"], last_progress_line(r["log"]) or "-", output_of(r["entrypoint"]) or "-")
            for r in rows
        ]
        print_table(console, table)
        return EXIT_OK
    if args.action == "status":
        info = jobs_client.status(address, args.job_id)
        progress = last_progress_line(jobs_client.logs(address, args.job_id))
        if progress:  # what the job is doing (or waiting for) now, from its own log
            info["progress"] = progress
        console.print(json.dumps(info))
        return EXIT_OK
    if args.action == "logs":
        if args.follow:  # to its end, as submit --wait does
            return _follow_to_the_end(console, address, args.job_id)
        text = jobs_client.logs(address, args.job_id)
        console.out.write(text if not text or text.endswith("\n") else text + "\n")
        return EXIT_OK
    stopped = jobs_client.stop(address, args.job_id)
    console.print(f"job {args.job_id}: stop requested" if stopped else f"job {args.job_id} was not running")
    return EXIT_OK if stopped else EXIT_INCOMPLETE


def job_server(given: str | None) -> tuple[str, str]:
    """(the job server's address, where it came from): --address, else $RAY_ADDRESS (or
    $RAY_API_SERVER_ADDRESS), else the one the last `submit` by this user used."""
    if given:
        return given, "--address"
    for variable in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        if os.environ.get(variable):
            return os.environ[variable], f"${variable}"
    try:
        remembered = _remembered_path().read_text().strip()
    except OSError:
        remembered = ""
    if remembered:
        return remembered, "the last submit's"
    raise UsageError(
        "--address is required (the cluster's job server, e.g. http://HEAD:8265); RAY_ADDRESS is "
        "not set and no job was submitted from here yet"
    )


def remember_job_server(address: str) -> None:
    """Kept per user, for the `jobs` commands that follow a submit."""
    path = _remembered_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(address + "\n")
    except OSError:
        pass  # a convenience: without it, `jobs` asks for --address


def _remembered_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "resnet-batch" / "job-server"


STOP_WAIT_S = 45  # seconds `jobs stop` waits from SIGTERM to SIGKILL: room for the job's save on stop (30 s)


@dataclass(frozen=True)
class Submission:
    address: str
    label_args: tuple[str, ...]
    submission_id: str | None = None
    working_dir: str | None = None
    pip: tuple[str, ...] = ()
    entrypoint_num_cpus: float = 0
    entrypoint_num_gpus: float = 0
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.label_args:
            raise UsageError(
                "give the label command after --, e.g. submit --address URL -- label s3://b/in --output s3://b/out"
            )
        if self.label_args[0] != "label":
            raise UsageError(f"only 'label' jobs can be submitted, got {self.label_args[0]!r}")

    def metadata_sent(self) -> dict:
        """What the job carries: this tool, its version and the job server (a resume's command
        line is built from it), and the user's --metadata."""
        return {"tool": "resnet-batch", "version": __version__, "job_server": self.address, **self.metadata}

    def entrypoint(self) -> str:
        return "python -m resnet_batch " + shlex.join(self.label_args)

    def runtime_env(self) -> dict:
        # Ship this package's source with the job; the cluster image provides torch and Ray.
        env: dict = {
            "py_modules": [str(Path(__file__).resolve().parent.parent)],  # the package
            # `jobs stop` sends SIGTERM, then SIGKILL after this many seconds (Ray's default:
            # 3): time for the job to save its finished rows (pipeline.SAVE_ON_INTERRUPT_S).
            # and this machine's RESNET_BATCH_* settings, which the job's processes read there.
            "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S), **_own_settings()},
        }
        if self.working_dir:
            env["working_dir"] = self.working_dir
        if self.pip:
            env["pip"] = list(self.pip)
        return env


def _own_settings() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("RESNET_BATCH_")}


def output_of(entrypoint: str) -> str:
    """The --output of a label job's command line ("" where it has none)."""
    try:
        words = shlex.split(entrypoint)
    except ValueError:
        return ""
    for i, word in enumerate(words):
        if word in ("--output", "-o") and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--output="):
            return word.split("=", 1)[1]
    return ""


PROGRESS_LINE = re.compile(r"^(\d\d:\d\d:\d\d) (.+: \d+(/\d+ images| images).*)$")
# A job's last word: the stop line, or its summary's first line ("inputs N, ... rows in output M").
FINAL_LINE = re.compile(
    r"^(stopped by SIG\w+: .*?);|^(inputs \d+, already done \d+, processed \d+, rows in output \d+)"
)


def last_progress_line(log_text: str) -> str | None:
    """What the job says of its progress: its last word once it has ended (the stop line or
    the summary's counts, which count every saved row), else its latest progress line with
    the time it was printed ("at HH:MM:SS")."""
    for line in reversed(log_text.splitlines()):
        line = line.strip().removeprefix("resnet-batch: ")
        final = FINAL_LINE.match(line)
        if final:
            return final.group(1) or final.group(2)
        match = PROGRESS_LINE.match(line)
        if match:
            return f"{match.group(2)} (at {match.group(1)})"
    return None
