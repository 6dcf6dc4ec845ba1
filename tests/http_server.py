"""An HTTP server of the tests' own on 127.0.0.1, serving a folder's files the ways real
servers do, and fail to (the first part of each URL path says how):

    /files/NAME        200 with Content-Length, Accept-Ranges and ranged reads (206)
    /whole/NAME        200 with the whole file always: no ranges (Range is ignored)
    /moved/NAME        302 to /files/NAME
    /gone/NAME         404
    /broken/NAME       500, every time
    /flaky/NAME        503 for the first two requests of each name, then as /files
    /slow/NAME         as /files, after SLOW_S seconds
    /cut/NAME          Content-Length of the whole file, half of it sent, then the connection closed
    /short/NAME        a Content-Length smaller than the file, and that many bytes: a file cut short

It counts the requests for each path (`requests`)."""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SLOW_S = 1.5


class FaultyFiles(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path, certificate: tuple[Path, Path] | None = None):
        """`certificate`: (certificate, key) files, to serve HTTPS."""
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder, self.lock = folder, threading.Lock()
        self.requests: Counter[str] = Counter()
        self.scheme = "https" if certificate else "http"
        if certificate:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*certificate)
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FaultyFiles:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join()


class _Handler(BaseHTTPRequestHandler):
    server: FaultyFiles
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: the tests read what they count
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        way, _, name = self.path.lstrip("/").partition("/")
        with self.server.lock:
            self.server.requests[self.path] += 1
            count = self.server.requests[self.path]
        file = self.server.folder / name
        if way == "gone" or not file.is_file():
            return self._status(404)
        if way == "broken" or (way == "flaky" and count <= 2):
            return self._status(500 if way == "broken" else 503)
        if way == "moved":
            self.send_response(302)
            self.send_header("Location", f"/files/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if way == "slow":
            time.sleep(SLOW_S)  # the server's own delay, what the test is about
        data = file.read_bytes()
        if way == "cut":
            return self._send(200, data[: len(data) // 2], length=len(data), body=body, close=True)
        if way == "short":
            return self._send(200, data[: len(data) // 2], length=len(data) // 2, body=body)
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged and way != "whole":
            start = int(ranged[1])
            end = min(int(ranged[2]) if ranged[2] else len(data) - 1, len(data) - 1)
            extra = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
            return self._send(206, data[start : end + 1], body=body, headers=extra)
        self._send(200, data, body=body, headers={} if way == "whole" else {"Accept-Ranges": "bytes"})

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, code, data, *, length=None, body=True, close=False, headers=None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(data)
        if close:
            self.wfile.flush()
            self.close_connection = True


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by its own key: (certificate, key) files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file
