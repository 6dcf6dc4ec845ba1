"""Ray Jobs API: submit a label job to a cluster, follow it, and manage it.

Token authentication (Ray 2.60's default for `ray start` heads) is handled by Ray's own
client, which reads RAY_AUTH_MODE and the token from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH
or ~/.ray/auth_token; this module never reads or prints the token itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..core.errors import UsageError, one_line, require

TERMINAL_OK = "SUCCEEDED"


def _client(address: str):
    job_submission = require("ray.job_submission", "submit", needed_for="submitting jobs")
    try:
        return job_submission.JobSubmissionClient(address)
    except Exception as exc:  # connection refused, bad address, auth failure: the whole reason, never cut
        reason = one_line(exc, limit=2000)
        if "ray[default]" in reason:
            raise UsageError("submitting jobs needs ray[default]: pip install 'resnet-batch[submit]'") from None
        if "token" in reason.lower() and os.environ.get("RAY_AUTH_MODE") != "token":
            reason += " (Ray 2.60 heads require token authentication: export RAY_AUTH_MODE=token, with the " \
                      "cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
        raise UsageError(f"cannot reach the Ray job server at {address}: {reason}") from None


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
            raise UsageError("give the label command after --, e.g. submit --address URL -- label s3://b/in --output s3://b/out")
        if self.label_args[0] != "label":
            raise UsageError(f"only 'label' jobs can be submitted, got {self.label_args[0]!r}")

    def entrypoint(self) -> str:
        return "python -m resnet_batch " + shlex.join(self.label_args)

    def runtime_env(self) -> dict:
        # Ship this package's source with the job; the cluster image provides torch and Ray.
        env: dict = {"py_modules": [str(Path(__file__).resolve().parent.parent)],  # the package
                     # `jobs stop` sends SIGTERM, then SIGKILL after this many seconds (Ray's default:
                     # 3): time for the job to save its finished rows (pipeline.SAVE_ON_INTERRUPT_S).
                     "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S)}}
        if self.working_dir:
            env["working_dir"] = self.working_dir
        if self.pip:
            env["pip"] = list(self.pip)
        return env


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
                metadata={"tool": "resnet-batch", "version": __version__, **sub.metadata},
            )
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise UsageError(f"job submission to {sub.address} failed: {one_line(exc)}") from None
            time.sleep(2)


async def _follow(client, job_id: str, out) -> None:
    async for lines in client.tail_job_logs(job_id):
        out.write(lines)
        out.flush()


def follow(address: str, job_id: str, out=sys.stdout) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    client = _client(address)
    asyncio.run(_follow(client, job_id, out))
    return client.get_job_status(job_id).value


def status(address: str, job_id: str) -> dict:
    info = _client(address).get_job_info(job_id)
    return {"submission_id": job_id, "status": str(info.status.value), "message": info.message,
            "entrypoint": info.entrypoint, "metadata": info.metadata}


def logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    return _client(address).stop_job(job_id)


PROGRESS_LINE = re.compile(r"^\d\d:\d\d:\d\d (.+: \d+/\d+\+? images.*)$")


def last_progress_line(log_text: str) -> str | None:
    """The job's latest progress line (phase, counts, what it waits for), without its time."""
    for line in reversed(log_text.splitlines()):
        match = PROGRESS_LINE.match(line.strip())
        if match:
            return match.group(1)
    return None
