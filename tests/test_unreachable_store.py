"""A store that does not answer is waited for, within a budget; what a store answers (not
found, denied, a full disk) is final at once. The errors are real ones: a refused
connection to a port nothing listens on, a missing file, botocore's own exception."""

from __future__ import annotations

import errno
import socket

import pytest
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from resnet_batch.core.storage import is_unreachable, retrying

from .helpers import free_port


def _connect(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return "answered"


def test_what_counts_as_a_store_that_does_not_answer(tmp_path):
    with pytest.raises(ConnectionRefusedError) as refused:
        _connect(free_port())
    with pytest.raises(FileNotFoundError) as missing:
        open(tmp_path / "no-such-object", "rb")
    assert is_unreachable(refused.value) and not is_unreachable(missing.value)
    assert is_unreachable(EndpointConnectionError(endpoint_url="http://198.18.0.3:5000/b/k"))
    assert is_unreachable(ConnectTimeoutError(endpoint_url="http://198.18.0.3:5000/b/k"))
    assert is_unreachable(ReadTimeoutError(endpoint_url="http://198.18.0.3:5000/b/k"))
    assert is_unreachable(OSError(errno.EHOSTUNREACH, "No route to host"))
    assert not is_unreachable(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_unreachable(PermissionError(errno.EACCES, "denied")) and not is_unreachable(ValueError("x"))


def test_a_store_that_comes_back_is_waited_for(tmp_path):
    port, attempts = free_port(), []
    listener = socket.socket()

    def call() -> str:
        attempts.append(1)
        if len(attempts) == 3:  # the store is back
            listener.bind(("127.0.0.1", port))
            listener.listen()
        return _connect(port)

    try:
        assert retrying(call, "reading s3://b/k", budget_s=30, pause=0.01) == "answered"
    finally:
        listener.close()
    assert len(attempts) == 3


def test_past_the_budget_and_on_a_final_error_the_error_is_raised(tmp_path):
    port, attempts = free_port(), []

    def refused() -> str:
        attempts.append(1)
        return _connect(port)

    with pytest.raises(ConnectionRefusedError):
        retrying(refused, "writing to s3://b/out", budget_s=0.2, pause=0.01)
    assert len(attempts) >= 2
    missing = []

    def read_missing():
        missing.append(1)
        return open(tmp_path / "gone", "rb")

    with pytest.raises(FileNotFoundError):
        retrying(read_missing, "reading", budget_s=30, pause=0.01)
    assert len(missing) == 1
