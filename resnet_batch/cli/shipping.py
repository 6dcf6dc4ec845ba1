"""The paths of a job submitted from off the cluster: they are read on the cluster's nodes.

A local path in `submit -- label ...` names a file on the nodes, not on the machine that
submits. When the job server is another machine, a path that exists here most likely
exists only here, and the job would end with a `missing` row per input. So, before the job
is sent: the small files the driver reads once (--weights, --labels, --config, a manifest)
travel with the job, in its working directory, and the command line names them there;
folders, images, tar shards and the output are refused, naming the path and the fix.
`--paths-on-cluster` says every node mounts these paths at the same place (NFS, a shared
disk), and nothing is checked.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..core.columns import PATH
from ..core.errors import UsageError
from ..core.storage import is_local

SHIPPED_BYTES_MAX = 256 * 2**20  # Ray uploads the working directory through its GCS: keep it small
SHIPPED_FOLDER = "shipped"
MANIFEST_ENTRIES_CHECKED = 10_000  # a manifest's first entries tell whether it names this machine's files
FIX = (
    "{} a bucket every node reads (s3://, gs://, az://) and name that, or, where every node mounts "
    "it at the same place, add --paths-on-cluster (README: From laptop to cluster)"
)


@dataclass
class Shipment:
    """The job's command line as the cluster runs it, and the folder to upload as its working
    directory (None: nothing to ship)."""

    label_args: list[str]
    working_dir: str | None


def job_server_is_here(address: str) -> bool:
    """The job server runs on this machine (its paths are this machine's): the address it
    resolves to is one this machine answers on."""
    host = urlsplit(address if "://" in address else f"http://{address}").hostname or ""
    try:
        target = str(socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)[0][4][0])
        with socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 9))  # no packet is sent: the kernel picks the source address
            return probe.getsockname()[0] == target or target.startswith("127.") or target == "::1"
    except OSError:
        return False


def prepare(label_args: list[str], job_server: str, working_dir: str | None) -> Shipment:
    """What the cluster's job runs: small local files shipped and renamed, or a refusal."""
    from .arguments import build_parser

    args = build_parser().parse_args(label_args)
    config = _config_values(args.config)
    _refuse_data_here(args, config)
    to_ship = {flag: value for flag, value in _small_files(args).items() if os.path.isfile(value)}
    if not to_ship:
        return Shipment(list(label_args), working_dir)
    if working_dir:
        names = ", ".join(to_ship.values())
        raise UsageError(
            f"submit: {names} must travel with the job, and --working-dir is given: put them in "
            f"{working_dir} and name them relative to it"
        )
    return _ship(label_args, to_ship)


def _config_values(path: str | None) -> dict:
    if not path or not is_local(path) or not os.path.isfile(path):
        return {}
    from ..config.config_file import load_config_file

    return load_config_file(path)


def _refuse_data_here(args: argparse.Namespace, config: dict) -> None:
    """Inputs, their manifests' entries and the output: none may be a file of this machine."""
    inputs = [(f"input {i}", i) for i in args.inputs or config.get("inputs") or []]
    output = args.output or config.get("output")
    for what, value in inputs:
        if _exists_here(value) and not _is_manifest_file(value):
            fix = FIX.format("copy it to")
            raise UsageError(f"submit: {what} is on this machine, not on the cluster's nodes; {fix}")
        if _is_manifest_file(value):
            _refuse_entries_here(value, args.path_column or config.get("path_column") or PATH)
    if output and is_local(output):
        raise UsageError(
            f"submit: --output {output} is a local path, and the cluster's nodes would each write their "
            f"parts to their own disk; {FIX.format('write it to')}"
        )
    for key in ("weights", "labels"):
        value = config.get(key)
        if isinstance(value, str) and _exists_here(value):
            raise UsageError(
                f"submit: the config's {key} {value} is on this machine; give it as --{key} on the command "
                "line (it then travels with the job), or put it in a bucket"
            )


def _refuse_entries_here(manifest: str, path_column: str) -> None:
    from ..data.manifests import read_manifest

    entries = read_manifest(manifest, path_column).column(PATH).to_pylist()[:MANIFEST_ENTRIES_CHECKED]
    for entry in entries:
        if entry and _exists_here(entry):
            raise UsageError(
                f"submit: the manifest {manifest} names {entry}, a file on this machine, not on the "
                f"cluster's nodes; {FIX.format('copy them to')}"
            )


def _small_files(args: argparse.Namespace) -> dict[str, str]:
    """The files the driver reads once, by the flag (or input) that names them."""
    found = {f"--{key}": getattr(args, key) for key in ("weights", "labels", "config") if getattr(args, key)}
    found.update({f"input {value}": value for value in args.inputs or [] if _is_manifest_file(value)})
    return {flag: value for flag, value in found.items() if is_local(value)}


def _exists_here(path: str) -> bool:
    if not is_local(path):
        return False
    local = path.removeprefix("file://")
    return os.path.exists(local) or bool(glob.has_magic(local) and glob.glob(local))


def _is_manifest_file(path: str) -> bool:
    from ..data.sources import is_manifest

    return is_local(path) and is_manifest(path) and os.path.isfile(path)


def _ship(label_args: list[str], files: dict[str, str]) -> Shipment:
    size = sum(os.path.getsize(path) for path in files.values())
    if size > SHIPPED_BYTES_MAX:
        listed = ", ".join(f"{flag} {path}" for flag, path in files.items())
        raise UsageError(
            f"submit: {listed} ({size / 2**20:.0f} MiB) are on this machine and too large to travel with "
            f"the job (at most {SHIPPED_BYTES_MAX // 2**20} MiB); put them in a bucket and name that"
        )
    folder = tempfile.mkdtemp(prefix="resnet-batch-submit-")
    renamed = {}
    for i, path in enumerate(dict.fromkeys(files.values())):
        name = f"{SHIPPED_FOLDER}/{i}-{os.path.basename(path)}"
        os.makedirs(os.path.join(folder, SHIPPED_FOLDER), exist_ok=True)
        shutil.copyfile(path, os.path.join(folder, name))
        renamed[path] = name
    return Shipment([_renamed(arg, renamed) for arg in label_args], folder)


def _renamed(arg: str, renamed: dict[str, str]) -> str:
    if arg in renamed:
        return renamed[arg]
    flag, eq, value = arg.partition("=")
    return f"{flag}={renamed[value]}" if eq and value in renamed else arg
