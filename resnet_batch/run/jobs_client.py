"""Ray's job server, through Ray's Jobs client: submit a job, follow its log, its status,
its log, stop it, list the jobs.

Token authentication (Ray 2.60's default for `ray start` heads) is handled by Ray's own
client, which reads RAY_AUTH_MODE and the token from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH
or ~/.ray/auth_token; this module never reads or prints the token itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

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


AGENT_WAIT_S = 60  # a head that has just started may not have its job agent up yet


def submit(address: str, entrypoint: str, runtime_env: dict, metadata: dict, **options) -> str:
    """The job's id, once the job server took it; `options` are Ray's (submission_id,
    entrypoint_num_cpus, entrypoint_num_gpus)."""
    client = _client(address)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata, **options)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise UsageError(f"job submission to {address} failed: {one_line(exc)}") from None
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
    id, status, start, entrypoint and log ("" where it cannot be read)."""
    client = _client(address)
    jobs = [job for job in client.list_jobs() if job.submission_id]
    rows = []
    for job in sorted(jobs, key=lambda j: j.start_time or 0):
        try:
            log_text = client.get_job_logs(job.submission_id)
        except RuntimeError:
            log_text = ""
        rows.append(
            {
                "id": job.submission_id,
                "status": str(job.status.value),
                "start": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((job.start_time or 0) / 1000)),
                "entrypoint": job.entrypoint or "",
                "log": log_text,
            }
        )
    return rows
