"""One check that tells where a GPU node's time goes, in a few minutes of the node's time.

On the GPU node (the project installed there, with `.[gpu]` for nvImageCodec):

    python bench/gpu_check.py --data DIR_OF_JPEGS --out OUT

(at most --budget-s, 340 s, plus the report), or anywhere, on the CPU, as a smoke run of
every section:

    python bench/gpu_check.py --smoke --out /tmp/gpu-check

Writes a compact Markdown report to stdout and `gpu_check.json` to --out. Sections:
  corruption  (first, in the kernels child) the decoder hazard: each GPU decoder, baseline and
            progressive JPEGs, with and without the barrier: queued work, tensors freed with their
            reductions pending, a decode, the reductions checked against the host's: "corrupted N of M"
  kernels   each of the job's GPU decoders (nvjpeg, nvimgcodec where installed) alone and with the
            batched crop, torchcodec where installed, PIL on one core and on the node's cores, the
            batched resize alone, the forward alone (from pinned uint8 crops: copy in and
            normalisation included) and five ways at the job's batch (eager, channels_last,
            torch.compile default and max-autotune-no-cudagraphs, a CUDA graph; compile times and
            when they are repaid), the GPU data path's time against the forward's, decode in a
            process of its own (own CUDA context, CUDA IPC hand-off) beside the forward, the model
            actor's loop serial (one call) against overlapped (two calls at once, as the job runs
            it), and overlapped with each decoder: which one the job should use
  profile   torch.profiler over ~20 steady batches of that overlapped loop: top CUDA and CPU
            ops, and the GPU's idle time and longest gaps
  bench     bench/bench.py's three contenders side by side, with SM and NVJPG use
  label     `label` resnet18 and resnet50 from launch to exit, with the summary's phase split,
            the model actor's start phase by phase, the CPU decode share, SM and NVJPG use
  pytest    `pytest -m gpu`
`kernels` and `profile` run in a child process, so that its GPU memory is free for the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import GpuMonitor, device_of, ensure_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- in the child
def kernels_and_profile(args) -> dict:
    """The `kernels` and `profile` sections (imports torch: run in a child process)."""
    import gpu_kernels

    return gpu_kernels.run(args)


# --------------------------------------------------------------------------- subprocesses
DEADLINE = [float("inf")]  # time.monotonic() by which the whole check ends (--budget-s)


def timed_run(cmd: list[str], limit_s: float, gpu: bool, env: dict | None = None, whole_stdout: bool = False) -> dict:
    """A command's exit code, output tail and seconds, with SM/NVJPG use over its run on a GPU;
    it gets at most `limit_s`, and never past the check's deadline."""
    limit_s = min(limit_s, DEADLINE[0] - time.monotonic())
    if limit_s < 10:
        return {"exit": "skipped: the check's time budget is spent", "seconds": 0, "stdout": "", "stderr": ""}
    monitor = GpuMonitor() if gpu else None
    start, wall_start = time.monotonic(), time.time()
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=limit_s, cwd=ROOT, env={**os.environ, **(env or {})}
        )
        code: int | str = done.returncode
        out, err = done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = "timeout", _text(exc.stdout), _text(exc.stderr)
    finally:
        if monitor:
            monitor.stop()
    result = {
        "exit": code,
        "seconds": round(time.monotonic() - start, 1),
        "stdout": out if whole_stdout else out[-4000:],
        "stderr": err[-2000:],
    }
    if monitor:
        result["sm_mean"] = round(monitor.mean(wall_start, time.time(), 1), 1)
        result["jpg_mean"] = round(monitor.mean(wall_start, time.time(), 2), 1)
    return result


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


def bench_contenders(args, gpu: bool) -> dict:
    out = Path(args.workdir) / "bench.json"
    images = min(args.bench_images, len(list(Path(args.data).glob("*.jpg"))))
    cmd = [
        sys.executable,
        "bench/bench.py",
        "--device",
        args.device,
        "--model",
        "resnet18" if args.smoke else "resnet50",
        "--precision",
        args.precision,
        "--data",
        str(args.data),
        "--images",
        str(images),
        "--workdir",
        str(Path(args.workdir) / "bench"),
        "--json",
        str(out),
    ]
    if args.smoke:
        cmd += ["--only", "bare", "--batch-size", str(args.batch_size), "--layouts", "1x2"]  # label: the next section
    run = timed_run(cmd, args.limit_s, gpu=False)  # bench.py samples SM use itself, per contender
    if out.exists():
        run["results"] = {
            name: {k: v for k, v in r.items() if k != "sm_samples"} for name, r in json.loads(out.read_text()).items()
        }
    return run


SUMMARY_LINES = ("wall ", "model actor start", "decoding: ", "inputs ", "errors: ")


def label_runs(args, gpu: bool) -> dict:
    runs = {}
    for model in args.models.split(","):
        out = Path(args.workdir) / f"label-{model}"
        cmd = [
            sys.executable,
            "-m",
            "resnet_batch",
            "label",
            str(args.data),
            "--output",
            str(out),
            "--mode",
            "overwrite",
            "--model",
            model,
            "--weights",
            "none",
            "--precision",
            args.precision,
            "--device",
            args.device,
            "--progress-every",
            "600",
        ]
        if args.smoke:
            cmd += ["--batch-size", str(args.batch_size)]
        run = timed_run(cmd, args.limit_s, gpu)
        run["summary"] = [line for line in run.pop("stdout").splitlines() if line.startswith(SUMMARY_LINES)]
        runs[model] = run
    return runs


def gpu_tests(args, gpu: bool) -> dict:
    if not gpu:
        return {"skipped": "no GPU here"}
    run = timed_run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:randomly"], args.limit_s, gpu)
    run["result"] = next(
        (line for line in reversed(run["stdout"].splitlines()) if re.search(r"passed|failed", line)), ""
    )
    return run


# --------------------------------------------------------------------------- report
def report(results: dict) -> str:
    lines = [f"# gpu_check: {results['device']}", ""]
    kernels = results.get("kernels", {})
    for c in kernels.get("corruption", []):
        barrier = "with the barrier" if c["barrier"] else "without the barrier"
        lines.append(f"corruption: {c['decoder']}, {c['kind']} JPEGs, {barrier}: {c['result']}")
    lines.append("")
    if kernels.get("rows"):
        lines += ["| stage (per batch) | ms | images/s | note |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['what']} | {r['ms']} | {r['images_per_s']} | {r.get('note', '')} |" for r in kernels["rows"]]
        lines += ["", f"decoder the job should use: {kernels.get('decoder_choice')}"]
    elif kernels:
        lines.append(f"kernels: {kernels.get('error', kernels)}")
    profile = kernels.get("profile", {})
    if profile:
        gpu = (
            f"GPU busy {profile['gpu_busy_pct']}% of {profile['window_ms']} ms; longest idle gaps (ms): "
            f"{profile['longest_gaps_ms']}"
            if profile["gpu_busy_pct"] is not None
            else "no GPU kernels"
        )
        lines += [
            "",
            f"profile of {profile['batches']} steady batches: {gpu}",
            "| top CUDA ops | ms |",
            "| --- | --- |",
        ]
        lines += [f"| {name} | {ms} |" for name, ms in profile["cuda_top"]]
        lines += ["| top CPU ops | ms |", "| --- | --- |"] + [f"| {name} | {ms} |" for name, ms in profile["cpu_top"]]
    lines += ["", *_bench_lines(results.get("bench", {})), "", *_label_lines(results.get("label", {}))]
    tests = results.get("pytest", {})
    lines += ["", f"pytest -m gpu: {tests.get('result') or tests.get('skipped') or tests.get('exit')}"]
    return "\n".join(lines)


def _bench_lines(bench: dict) -> list[str]:
    if not bench.get("results"):
        return [f"bench.py: exit {bench.get('exit')}: {bench.get('stderr', '')[-500:]}"]
    lines = [
        "| bench.py contender | steady images/s | end-to-end images/s | start-up s | SM % | NVJPG % | layout |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in bench["results"].items():
        lines.append(
            f"| {name} | {r['rate']:.0f} | {r['end_to_end']:.0f} | {r.get('startup_s', 0):.1f} "
            f"| {r.get('sm_steady', '-')} | {r.get('jpg_steady', '-')} | {r.get('layouts', '')} |"
        )
    return lines


def _label_lines(runs: dict) -> list[str]:
    lines = []
    for model, run in runs.items():
        use = f", SM {run['sm_mean']}%, NVJPG {run['jpg_mean']}% over the run" if "sm_mean" in run else ""
        lines.append(f"label {model}: exit {run['exit']}, {run['seconds']} s in all{use}")
        lines += [f"    {line}" for line in run["summary"]] or [f"    {run['stderr'][-500:]}"]
    return lines


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="folder of JPEGs (default: generated)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu-check")))
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--models", default="resnet18,resnet50", help="label runs")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=20, help="kernels/profile: batches per timed loop")
    p.add_argument("--corruption-trials", type=int, default=50, help="trials per decoder, JPEG kind and barrier")
    p.add_argument("--bench-images", type=int, default=10000)
    p.add_argument("--limit-s", type=float, default=150, help="each subprocess's time limit")
    p.add_argument(
        "--budget-s",
        type=float,
        default=340,
        help="the whole check's time limit (what is left "
        "when a section starts is its limit; sections with under 10 s left are skipped)",
    )
    p.add_argument("--sections", default="kernels,label,pytest,bench", help="in this order")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, on whatever device is here (CPU: no pytest)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/resnet-batch-gpu-check"))
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        # the label section's own machinery, on the null model: what a row holds is the tests' business
        args.batch_size, args.batches, args.bench_images, args.models = 8, 3, 24, "none"
        args.corruption_trials = 2
        args.precision = "fp32" if args.precision == "auto" else args.precision
    args.device = device_of(args.device)
    if args.data is None:
        args.data = args.workdir / "images"
        ensure_images(args.data, max(args.bench_images, 2 * args.batch_size))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args._child:
        print(json.dumps(kernels_and_profile(args)))
        return
    gpu = args.device == "cuda"
    DEADLINE[0] = time.monotonic() + args.budget_s
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"device": _device_name(gpu), "args": {k: str(v) for k, v in vars(args).items()}}
    sections = args.sections.split(",")
    if "kernels" in sections:
        child = timed_run(
            [sys.executable, __file__, "--_child", *(sys.argv[1:] if argv is None else argv)],
            args.limit_s,
            gpu=False,
            whole_stdout=True,  # its last line is the sections' JSON
        )
        try:
            results["kernels"] = json.loads(child["stdout"].strip().splitlines()[-1])
        except (ValueError, IndexError):
            results["kernels"] = {"error": f"exit {child['exit']}: {child['stderr'][-1500:]}"}
    steps = {"bench": bench_contenders, "label": label_runs, "pytest": gpu_tests}
    for name in [s for s in sections if s in steps]:
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        results[name] = steps[name](args, gpu)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    print(report(results))


def _device_name(gpu: bool) -> str:
    if not gpu:
        return f"CPU, {os.cpu_count()} cores"
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
    return f"{listed.splitlines()[0] if listed else 'GPU'}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
