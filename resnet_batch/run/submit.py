"""Ray Jobs API: submit a label job to a cluster, follow it, and manage it.

Token authentication (Ray 2.60's default for `ray start` heads) is handled by Ray's own
client, which reads RAY_AUTH_MODE and the token from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH
or ~/.ray/auth_token; this module never reads or prints the token itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .. import __version__
from ..core.errors import UsageError, one_line, require

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient


TERMINAL_OK = "SUCCEEDED"

log = logging.getLogger(__name__)


def _client(address: str):
    job_submission = require("ray.job_submission", "submit", needed_for="submitting jobs")
    try:
        return job_submission.JobSubmissionClient(address)
    except Exception as exc:  # connection refused, bad address, auth failure: the whole reason, never cut
        reason = one_line(exc, limit=2000)
        if "ray[default]" in reason:
            raise UsageError("submitting jobs needs ray[default]: pip install 'resnet-batch[submit]'") from None
        if "token" in reason.lower() and os.environ.get("RAY_AUTH_MODE") != "token":
            reason += (
                " (Ray 2.60 heads require token authentication: export RAY_AUTH_MODE=token, with the "
                "cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
            )
        raise UsageError(f"cannot reach the Ray job server at {address}: {reason}") from None


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


def submitted_from() -> str | None:
    """In a job `submit` sent: the job server it was sent to (None elsewhere); Ray hands
    the job its metadata in RAY_JOB_CONFIG_JSON_ENV_VAR."""
    import json

    try:
        metadata = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "")).get("metadata") or {}
    except (ValueError, AttributeError):
        return None
    return metadata.get("job_server") if metadata.get("tool") == "resnet-batch" else None


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


AGENT_WAIT_S = 60  # a head that has just started may not have its job agent up yet


def submit(sub: Submission) -> str:
    client = _client(sub.address)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(
                entrypoint=sub.entrypoint(),
                submission_id=sub.submission_id,
                runtime_env=sub.runtime_env(),
                entrypoint_num_cpus=sub.entrypoint_num_cpus,
                entrypoint_num_gpus=sub.entrypoint_num_gpus,
                metadata={"tool": "resnet-batch", "version": __version__, "job_server": sub.address, **sub.metadata},
            )
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise UsageError(f"job submission to {sub.address} failed: {one_line(exc)}") from None
            time.sleep(2)


FOLLOW_RECONNECT_S = 300  # how long a follower waits for a job server that stopped answering


class JobServerLost(Exception):
    """The job server stopped answering a follower for FOLLOW_RECONNECT_S; the job runs on."""


async def _follow(client: JobSubmissionClient, job_id: str, out: TextIO, written: list[int]) -> None:
    """The job's log past its first written[0] characters: the log server replays it from
    the start on each connection, and what a lost connection had shown is not shown twice."""
    seen = 0
    async for chunk in client.tail_job_logs(job_id):
        new = chunk[max(0, written[0] - seen) :]
        seen += len(chunk)
        if new:
            out.write(new)
            out.flush()
            written[0] = seen


def follow(address: str, job_id: str, out: TextIO = sys.stdout) -> str:
    """Stream the job's logs until it ends; returns its final status. A job server that stops
    answering (a network blip, a restarted head) is reconnected to for FOLLOW_RECONNECT_S."""
    client = _client(address)
    written, lost_at = [0], None
    while True:
        try:
            asyncio.run(_follow(client, job_id, out, written))
            status = client.get_job_status(job_id)
            if status.is_terminal():
                return status.value
            lost_at = None  # the log ended early: the server restarted, and answers again
        except Exception as exc:  # the server, not the job: the job runs on the cluster meanwhile
            if lost_at is None:
                lost_at = time.monotonic()
                log.warning("the job server at %s stopped answering (%s); reconnecting", address, one_line(exc))
            elif time.monotonic() - lost_at > FOLLOW_RECONNECT_S:
                raise JobServerLost(
                    f"the job server at {address} has not answered for {FOLLOW_RECONNECT_S} s; job {job_id} "
                    f"may still be running: resnet-batch jobs logs {job_id} --follow --address {address}"
                ) from None
        time.sleep(2)


@contextmanager
def _known_job(address: str, job_id: str):
    """An unknown id is one line (Ray's client raises its HTTP error with the body)."""
    try:
        yield
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise UsageError(
                f"no job {job_id} on {address}; `resnet-batch jobs list --address {address}` lists its jobs"
            ) from None
        raise


def status(address: str, job_id: str) -> dict:
    with _known_job(address, job_id):
        info = _client(address).get_job_info(job_id)
    return {
        "submission_id": job_id,
        "status": str(info.status.value),
        "message": info.message,
        "entrypoint": info.entrypoint,
        "metadata": info.metadata,
    }


def logs(address: str, job_id: str) -> str:
    with _known_job(address, job_id):
        return _client(address).get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    with _known_job(address, job_id):
        return _client(address).stop_job(job_id)


def list_jobs(address: str) -> list[dict]:
    """The jobs submitted to the cluster (not the drivers that joined it), oldest first:
    id, status, start, progress (their latest progress line) and output."""
    client = _client(address)
    jobs = [job for job in client.list_jobs() if job.submission_id]
    rows = []
    for job in sorted(jobs, key=lambda j: j.start_time or 0):
        try:
            progress = last_progress_line(client.get_job_logs(job.submission_id)) or ""
        except RuntimeError:
            progress = ""
        rows.append(
            {
                "id": job.submission_id,
                "status": str(job.status.value),
                "start": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((job.start_time or 0) / 1000)),
                "progress": progress,
                "output": output_of(job.entrypoint or ""),
            }
        )
    return rows


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
