"""One file read over HTTP(S), as the readers need it: its status as the errors they know
(404 and 410: FileNotFoundError; 5xx and 429: ServerBusy, which storage.retrying tries
again), a body read no further than a limit, a range read where the server honours ranges
(skipped to where it does not), and a body that ends before its Content-Length said as
such: never handed on as a whole file. The standard library's client: redirects followed,
proxies and certificates as the environment says."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

TIMEOUT_S = 60.0  # to connect, and between two reads of the body
CHUNK = 1 << 20


class ServerBusy(OSError):
    """A 5xx or 429 answer: the server is there but cannot answer now (worth retrying)."""

    def __init__(self, url: str, status: int, reason: str):
        super().__init__(f"HTTP {status} {reason}".strip())
        self.url, self.status, self.reason = url, status, reason

    def __reduce__(self):  # raised in Ray workers: pickled with its own arguments
        return type(self), (self.url, self.status, self.reason)


def read(url: str, offset: int = -1, size: int = -1, limit: int | None = None) -> bytes:
    """The body (at most `limit` + 1 bytes), or `size` bytes at `offset`."""
    headers = {"Range": f"bytes={offset}-{offset + size - 1}"} if offset >= 0 and size > 0 else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as response:
            if offset > 0 and response.status != 206:  # the whole file: read up to the range
                _skip(response, offset)
            wanted = size if offset >= 0 else (limit + 1 if limit is not None else -1)
            return _read_body(response, wanted)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (404, 410):
            raise FileNotFoundError(f"{url}: HTTP {exc.code}") from None
        if exc.code >= 500 or exc.code == 429:
            raise ServerBusy(url, exc.code, exc.reason) from None
        if exc.code in (401, 403):
            raise PermissionError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        raise OSError(f"{url}: HTTP {exc.code} {exc.reason}") from None


def _read_body(response, wanted: int) -> bytes:
    """`wanted` bytes (all, if -1), or fewer where the body ends; an end before the
    Content-Length is an error."""
    parts, held = [], 0
    try:
        while wanted < 0 or held < wanted:
            part = response.read(CHUNK if wanted < 0 else min(CHUNK, wanted - held))
            if not part:
                break
            parts.append(part)
            held += len(part)
    except http.client.IncompleteRead as exc:
        held += len(exc.partial)
    left = response.length  # of the Content-Length; the client ends quietly when the connection does
    if left and (wanted < 0 or held < wanted):
        raise OSError(f"the response was cut short: {held} of {held + left} bytes")
    return b"".join(parts)


def _skip(response, count: int) -> None:
    while count > 0:
        part = response.read(min(CHUNK, count))
        if not part:
            raise OSError("the response ended before the range asked for")
        count -= len(part)
