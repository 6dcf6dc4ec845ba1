"""The command line as a user runs it: a fresh process that starts its own local Ray, and
its refusals (through main() in this process, jobs on the suite's Ray)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .helpers import RESNET_BATCH, cli, found, in_process

pytestmark = pytest.mark.e2e  # runs the command, or Ray, in processes of its own

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "images"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "resnet99"], "valid: resnet18, resnet34, resnet50, resnet101, resnet152"),
        (["--mode", "append"], "valid: error, overwrite, resume"),
        (["--precision", "int8"], "valid: auto, fp32, fp16, bf16"),
        (["--device", "tpu"], "valid: auto, cpu, cuda"),
        (["--embedding-dtype", "float64"], "valid: float32, float16"),
        (["--weights", "IMAGENET1K_V9"], "valid: DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2, none, PATH-or-URI"),
        (
            ["--weights", "imagenet"],
            "checkpoint not found: imagenet; --weights valid: DEFAULT, IMAGENET1K_V1, "
            "IMAGENET1K_V2, none, PATH-or-URI (a .pt/.pth/.safetensors file",
        ),
        (
            ["--model", "none", "--weights", "IMAGENET1K_V1"],
            "--model none (the null model, a benchmark aid) takes no --weights",
        ),
        (["--checkpoint-every", "0"], "--checkpoint-every must be a number of seconds > 0"),
        (["--batch-size", "-4"], "--batch-size must be an integer >= 1"),
        (["--gpu-decoder", "dali"], "valid: auto, nvjpeg, nvimgcodec"),
        (["--num-workers", "1000", "--model", "none"], "--num-workers must be between 1 and"),
        (["--address", "http://127.0.0.1:8299"], "--address http://127.0.0.1:8299 is a job server"),
        (["s3x://bucket/x"], "unsupported URI scheme 's3x'"),
        (["/definitely/not/here"], "does not exist"),
    ],
)
def test_bad_arguments_give_one_line(ray_local, tmp_path, args, needle):
    base = ["label", str(EXAMPLES), "--output", str(tmp_path / "o")]
    if not args[0].startswith("--"):
        base = ["label", args[0], "--output", str(tmp_path / "o")]
        args = []
    result = in_process(*base, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_missing_weights_download_is_one_clear_line(tmp_path):
    result = in_process(
        "label",
        str(EXAMPLES),
        "--output",
        str(tmp_path / "o"),
        "--model",
        "resnet34",
        env={"TORCH_HOME": str(tmp_path / "torch")},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot download resnet34 IMAGENET1K_V1" in lines[0]
    assert "--weights none" in lines[0] and "--weights PATH-or-URI" in lines[0] and "hub/checkpoints" in lines[0]
    assert not (tmp_path / "o").exists(), "a job that failed before any row leaves no output behind"

    # A release in the hub cache is left to the model actors (the driver imports no torch):
    # a corrupt one fails there, and says so as clearly. (A job of its own: the actors of
    # the suite's Ray do not see this TORCH_HOME.)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)  # the failed download above made it
    (cache / "resnet18-f37072fd.pth").write_bytes(b"half a download")
    result = cli(
        "label",
        str(EXAMPLES),
        "--output",
        str(tmp_path / "o"),
        "--model",
        "resnet18",
        env={"TORCH_HOME": str(tmp_path / "torch")},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot download resnet18 IMAGENET1K_V1" in lines[0], result.stderr
    assert "UnpicklingError" in lines[0] and "hub/checkpoints" in lines[0]


def test_a_dry_run_prints_the_plan_and_touches_nothing(ray_local, tmp_path):
    out = tmp_path / "out"
    result = in_process(
        "label",
        str(EXAMPLES),
        "--output",
        str(out),
        "--model",
        "resnet18",
        "--weights",
        "none",
        "--batch-size",
        "8",
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"plan for 1 node with CPUs \(\d+ or more each\):", lines[0]), lines
    assert lines[1].startswith("  model: 1 actor on CPUs, each holding 1 CPU, ") and "; batch 8, precision " in lines[1]
    assert lines[2].startswith("  decoding: on CPUs: decode tasks of 32 rows, 1 CPU each at idle priority, up to ")
    assert not out.exists()
    out.mkdir()
    (out / "x.txt").write_text("someone's")
    refused = in_process("label", str(EXAMPLES), "--output", str(out), "--weights", "none", "--dry-run")
    assert refused.returncode == 2 and "already holds 1 file and is not an output of resnet-batch" in refused.stderr


def test_an_explicit_gpu_decoder_that_is_not_installed_is_one_line(ray_local, tmp_path):
    """The model actor cannot start: its typed error reaches the driver as one line, exit 2."""
    pytest.importorskip("torch")
    if __import__("importlib").util.find_spec("nvidia.nvimgcodec") is not None:
        pytest.skip("nvImageCodec is installed here")
    result = in_process(
        "label",
        str(EXAMPLES),
        "--output",
        str(tmp_path / "out"),
        "--model",
        "resnet18",
        "--weights",
        "none",
        "--decode",
        "gpu",
        "--gpu-decoder",
        "nvimgcodec",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "resnet-batch: error: --gpu-decoder nvimgcodec needs the nvidia.nvimgcodec package: pip install "
            "'resnet-batch[gpu]' (logs: "
        )
    )


def test_models_table_and_json():
    import json

    table = in_process("models").stdout.splitlines()
    assert table[0].split()[:2] == ["model", "default"] and len(table) == 11
    widths = {line.split()[0]: line.split()[2] for line in table[1:]}
    assert widths == {
        "resnet18": "512",
        "resnet34": "512",
        "resnet50": "2048",
        "resnet101": "2048",
        "resnet152": "2048",
        "resnext50_32x4d": "2048",
        "resnext101_32x8d": "2048",
        "resnext101_64x4d": "2048",
        "wide_resnet50_2": "2048",
        "wide_resnet101_2": "2048",
    }
    assert table[1].split()[3] == "64/128/256/512" and table[3].split()[3] == "256/512/1024/2048"
    assert table[1].index("512") == table[3].index("2048"), "columns are aligned"
    rows = [json.loads(line) for line in in_process("models", "--json").stdout.splitlines()]
    assert [r["model"] for r in rows] == list(widths) and rows[2]["default"] == "IMAGENET1K_V2"


def test_shipped_job_starts_its_own_ray_and_writes_every_row(tmp_path):
    """jobs/cpu-small.yaml from another directory (paths relative to the file, random weights,
    no download), with flags that override it; then read without Ray, and refused again."""
    import yaml

    job = yaml.safe_load((ROOT / "jobs" / "cpu-small.yaml").read_text())
    out = tmp_path / "out"
    # As `python -m resnet_batch`, noting at exit whether the driver imported torch.
    modules = tmp_path / "driver-modules"
    launcher = (
        "import atexit, sys; from resnet_batch.cli.main import main; "
        f"atexit.register(lambda: open({str(modules)!r}, 'w').write(' '.join(sorted(sys.modules)))); "
        "sys.exit(main())"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            launcher,
            "label",
            "--config",
            str(ROOT / "jobs" / "cpu-small.yaml"),
            "--output",
            str(out),
            "--progress-every",
            "0.2",
            "--top-k",
            "3",
            "--embedding-dtype",
            "float16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "TORCH_HOME": str(tmp_path / "no-cache"), "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    driver_modules = modules.read_text().split()
    assert "ray.data" in driver_modules and "torch" not in driver_modules, "the driver runs no model"
    n = len(list(EXAMPLES.iterdir()))
    assert job["weights"] == "none" and job.get("top_k") != 3
    assert f"inputs {n}, already done 0, processed {n}, rows in output {n}" == result.stdout.splitlines()[0]
    assert "errors: decode_error 1" in result.stdout
    assert "images/s" in result.stdout and "complete: every input has exactly one row" in result.stdout
    # Not a terminal: progress comes as lines on stderr, Ray's own output goes to the log file.
    progress = [
        line
        for line in result.stderr.splitlines()
        if re.match(r"\d\d:\d\d:\d\d [a-z].*: \d+(/\d+ images| images of \d+\+ listed so far| images so far)", line)
    ]
    assert progress and all(f"/{n} images" in line or "so far" in line for line in progress), result.stderr
    assert len(progress) == len(result.stderr.strip().splitlines()), result.stderr

    # Plain pandas and pyarrow read it, without Ray anywhere in the reading process.
    reader = (
        "import sys, pandas as pd, pyarrow.parquet as pq\n"
        f"df = pd.read_parquet({str(out)!r})\n"
        f"t = pq.read_table({str(out)!r})\n"
        "assert 'ray' not in sys.modules\n"
        "print(len(df), t.schema.field('embedding').type, sorted(df.error.dropna().str.split(':').str[0]))\n"
    )
    read = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    assert read.stdout.split("\n")[0] == f"{n} fixed_size_list<element: halffloat>[512] ['decode_error']"
    table = pq.read_table(out)
    assert all(
        len(ids) == 3
        for ids, e in zip(table["topk_ids"].to_pylist(), table["error"].to_pylist(), strict=False)
        if e is None
    )

    # The wall time is this command's own: a shell's time before it (here 3 s) is not counted.
    resume = [
        *RESNET_BATCH,
        "label",
        "--config",
        str(ROOT / "jobs" / "cpu-small.yaml"),
        "--output",
        str(out),
        "--top-k",
        "3",
        "--embedding-dtype",
        "float16",
        "--mode",
        "resume",
    ]
    began = time.monotonic()
    late = subprocess.run(
        ["bash", "-c", "sleep 3; exec " + shlex.join(resume)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "TORCH_HOME": str(tmp_path / "no-cache")},
    )
    took = time.monotonic() - began
    assert late.returncode == 0, late.stderr
    wall = float(found(r"wall ([\d.]+)s", late.stdout).group(1))
    assert wall <= took - 3 + 0.5, (wall, took)

    # The default --mode error refuses to touch the result, before doing any work: exit 2
    # and one line, from a process of its own (the contract every refusal keeps).
    again = cli("label", str(EXAMPLES), "--output", str(out), "--model", "resnet18", "--weights", "none")
    assert again.returncode == 2
    assert "already holds" in again.stderr and "--mode resume" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_stopping_the_jobs_own_ray_ends_all_its_processes(tmp_path):
    # In a fresh process (the suite's own Ray is joined, never started, by the jobs it runs),
    # recording which processes are still alive when Ray's shutdown comes to kill each, and
    # when a SIGTERM sent in the middle of the stop reaches its handler.
    code = """
import json, os, signal, ray
from resnet_batch.run import ray_compat, ray_session
from tests.ray_internals import node_class
alive = {}
Node = node_class()
kill = Node._kill_process_type
def recording(self, kind, *args, **kwargs):
    alive[kind] = any(p.poll() is None for p in ray_compat.node_processes(self, kind))
    return kill(self, kind, *args, **kwargs)
Node._kill_process_type = recording
assert ray_session.join_or_start(None)
processes = ray_compat.node_processes(ray_compat.started_node())
running_at_signal = []
signal.signal(signal.SIGTERM, lambda *_: running_at_signal.append(sum(p.poll() is None for p in processes)))
shutdown = ray.shutdown
def signalled_shutdown(**kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    shutdown(**kwargs)
ray.shutdown = signalled_shutdown
ray_session.stop()
print(json.dumps({"alive": alive, "ended": sum(p.wait(5) is not None for p in processes), "started": len(processes),
                  "running_at_signal": running_at_signal}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.splitlines()[-1])
    # The monitor is gone before Ray's own shutdown reaches it (it would wait a second on
    # its SIGTERM); the raylet is left to Ray's own shutdown.
    assert result["alive"]["monitor"] is False and result["alive"]["raylet"] is True
    assert result["ended"] == result["started"] >= 4
    # The signal waited for the stop to end: a handler that raises cannot cut it short.
    assert result["running_at_signal"] == [0]


def test_a_sigterm_during_rays_start_is_the_jobs_own(tmp_path):
    # ray.init installs a handler that raises SystemExit wherever a SIGTERM lands; inside
    # Ray's start-up that was swallowed (the job ran on) or left the logging lock held (the
    # job hung). Watched from another thread: the handler in place all through the start,
    # and a SIGTERM sent in the middle of it (as its raylet starts), held until Ray has started
    # and then stopped.
    code = """
import json, os, signal, threading, time, ray
from resnet_batch.run import ray_compat, ray_session
from tests.ray_internals import node_class
ours = lambda *_: None
signal.signal(signal.SIGTERM, ours)
seen, handled, starting = set(), [], threading.Event()
def watch():
    while not starting.is_set():
        time.sleep(0.001)
    while starting.is_set():
        handler = signal.getsignal(signal.SIGTERM)
        seen.add("ours" if handler is ours else getattr(handler, "__qualname__", repr(handler)))
        time.sleep(0.001)
Node = node_class()
start_raylet = Node.start_raylet
def signalled_start_raylet(self, *args, **kwargs):  # the signal lands in the middle of Ray's start
    os.kill(os.getpid(), signal.SIGTERM)
    return start_raylet(self, *args, **kwargs)
Node.start_raylet = signalled_start_raylet
threading.Thread(target=watch, daemon=True).start()
signal.signal(signal.SIGTERM, lambda *_: handled.append(ray.is_initialized()))
ours = signal.getsignal(signal.SIGTERM)
starting.set()
try:
    ray_session.join_or_start(None)
finally:
    starting.clear()
print(json.dumps({"seen": sorted(seen), "handled": handled, "initialized_after": ray.is_initialized()}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert "sigterm_handler" not in " ".join(result["seen"]), result  # Ray's never replaced the job's
    # Delivered once, after the start and the stop that followed it.
    assert result == {"seen": result["seen"], "handled": [False], "initialized_after": False}
