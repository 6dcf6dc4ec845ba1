"""Side-by-side throughput: bare model forward vs Ray's documented pipeline vs `resnet-batch label`.

    python bench/bench.py                       # 2000 generated JPEGs, resnet18, fp32
    python bench/bench.py --precision auto      # bf16 autocast where the CPU/GPU has it
    python bench/bench.py --images 500 --only label   # e.g. the 1x of a memory-scaling pair
    python bench/bench.py --device cuda --model resnet50 --precision auto --data DIR --images 30000
    python bench/bench.py --only label --label-args "--cpu-decode-share 0.3" ...   # one setting of a sweep

On a GPU (`--device cuda`) `nvidia-smi dmon` samples SM use (and the JPEG engines') every
second next to each contender; the table gives its mean over the contender's steady phase.

Each contender runs in its own process tree on the same images; peak memory is the
largest sampled sum of RSS over that tree (driver, raylet, Ray workers). "steady" is the
rate between the first and the last model batch; "start-up" is the time from launch to
the first batch (Ray, workers, model load); "end-to-end" is images / the contender's own
launch-to-exit time (for label, the wall time its summary gives: this wrapper imports
neither torch nor Ray, and its child's start is not counted against anyone).
The bare forward is the best the device does: crops decoded beforehand, held in pinned
memory, copied in and normalised per batch, timed after a warm-up in each of a few layouts
(GPU: 1x4, 2x4, 4x2 calls x threads, each call on a stream of its own; CPU: as the job's
actor, one single-threaded call per core); `--only bare --layouts 1x2` times one call on
both cores instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.config.plan import Cluster, make_plan
from resnet_batch.model.settings import ALLOCATOR_ENV

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers import found  # noqa: E402

DEFAULT_DATA = ROOT / "bench" / "data"
BARE_DISTINCT = 2048  # images the bare forward decodes beforehand; larger runs cycle through them
BARE_GPU_LAYOUTS = ("1x4", "2x4", "4x2")  # calls at once x torch threads per call


# --------------------------------------------------------------------------- images
def photo_like(rng: np.random.Generator, height: int = 375, width: int = 500) -> np.ndarray:
    """Gradients, shapes with edges and sensor-like noise: JPEGs of 80-150 KB at quality 90."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack(
        [
            127 + 90 * np.sin(rng.uniform(0.005, 0.04) * x + rng.uniform(0.005, 0.04) * y + rng.uniform(0, 6.3))
            for _ in range(3)
        ],
        -1,
    )
    for _ in range(rng.integers(4, 10)):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(15, 120)
        mask = (y - cy) ** 2 + (x - cx) ** 2 < r**2
        img[mask] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 16, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def ensure_images(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:06d}.jpg"
        pixels = photo_like(rng)  # drawn even when the file exists, so image i is the same in any run
        if not path.exists():
            Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def device_of(device: str) -> str:
    """--device auto as the job resolves it, without importing torch in this wrapper."""
    if device != "auto":
        return device
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"
    return "cuda" if "GPU" in listed else "cpu"


# --------------------------------------------------------------------------- memory
def tree_rss_bytes(root_pid: int) -> int:
    """Sum of RSS over root_pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * page
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[str, float, int]:
    """(stdout, wall seconds, peak tree RSS bytes) of a command."""
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.monotonic() - start
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{err[-3000:]}")
    return out, wall, peak[0]


def _ratio(rate: float, reference: float | None) -> str:
    return f"{rate / reference:.2f}" if reference else "-"


def _dmon_value(fields: list[str], columns: list[str], name: str) -> float:
    """A column of one `nvidia-smi dmon` line, NaN where it is missing or not a number."""
    if name in columns and fields[columns.index(name)].replace(".", "").isdigit():
        return float(fields[columns.index(name)])
    return float("nan")


class GpuMonitor:
    """`nvidia-smi dmon -s u`: per-second SM and NVJPG use, timestamped here as lines arrive."""

    def __init__(self):
        self.samples: list[tuple[float, float, float]] = []  # (time, sm %, jpg %), one per GPU per second
        self.proc = subprocess.Popen(
            ["nvidia-smi", "dmon", "-s", "u", "-d", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        columns: list[str] = []
        for line in self.proc.stdout or ():
            fields = line.split()
            if line.startswith("#"):
                columns = columns or [f for f in fields if f != "#"]
                continue
            self.samples.append((time.time(), _dmon_value(fields, columns, "sm"), _dmon_value(fields, columns, "jpg")))

    def stop(self) -> None:
        self.proc.terminate()

    def mean(self, start: float, end: float, column: int) -> float:
        values = [s[column] for s in self.samples if start <= s[0] <= end and s[column] == s[column]]
        return sum(values) / len(values) if values else float("nan")


# --------------------------------------------------------------------------- contenders
def cpu_crops(paths: list[Path], preprocessing, threads: int = 1) -> np.ndarray:
    """The CPU path's uint8 crops of `paths`, stacked; an image that does not decode stops the
    bench, which measures the model on the images it was given."""
    from concurrent.futures import ThreadPoolExecutor

    from resnet_batch.data.decode import Source, load_one
    from resnet_batch.data.limits import Limits

    with ThreadPoolExecutor(threads) as pool:
        images = list(pool.map(lambda p: load_one(Source(str(p)), preprocessing, Limits()), paths))
    failed = [f"{p}: {image.error}" for p, image in zip(paths, images, strict=True) if image.pixels is None]
    if failed:
        raise SystemExit(f"bench images that do not decode: {failed[:3]}")
    return np.stack([image.pixels for image in images if image.pixels is not None])


def bare_forward(args) -> dict:
    """Model forward only, from uint8 crops decoded beforehand and held in pinned memory: each
    batch's copy to the device and its normalisation are in it, as in the job's actor. Every
    layout in --layouts (calls at once x torch threads per call, each call on a CUDA stream of
    its own) runs after a warm-up; the best is the contender's figure."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from resnet_batch.model.inference import Predictor
    from resnet_batch.model.settings import InferenceSettings
    from resnet_batch.model.weights import resolve_weights

    resolved = resolve_weights(args.model, "none")
    paths = sorted(Path(args.data).glob("*.jpg"))[: min(args.images, BARE_DISTINCT)]
    decoded = cpu_crops(paths, resolved.preprocessing, threads=os.cpu_count() or 1)
    settings = InferenceSettings(weights=resolved, top_k=5, precision=args.precision, device=args.device)
    predictor = Predictor(settings, schema=None)
    # `images` crops in all, cycling through the distinct ones decoded above
    crops = torch.from_numpy(decoded[np.arange(args.images) % len(decoded)])
    if predictor.device.type == "cuda":
        crops = crops.pin_memory()
    batches = list(torch.split(crops, args.batch_size))

    def run(share):
        with predictor._stream():
            for batch in share:
                predictor.network.run_model(batch.to(predictor.device, non_blocking=True))

    def sync():
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()

    seconds_of: dict[str, float] = {}
    windows: dict[str, list[float]] = {}
    for layout in args.layouts.split(","):
        calls, threads = (int(n) for n in layout.split("x"))
        torch.set_num_threads(threads)
        with ThreadPoolExecutor(calls) as pool:
            list(pool.map(run, [batches[:1]] * calls))  # warm-up on every thread (allocations, autotuning)
            sync()
            start, wall_start = time.monotonic(), time.time()
            list(pool.map(run, [batches[i::calls] for i in range(calls)]))
            sync()
        seconds_of[layout], windows[layout] = time.monotonic() - start, [wall_start, time.time()]
    best = min(seconds_of, key=seconds_of.__getitem__)
    seconds = seconds_of[best]
    return {
        "images": len(crops),
        "steady_s": seconds,
        "run_s": seconds,
        "precision": predictor.network.precision,
        "steady_window": windows[best],
        "layout": best,
        "layouts": {name: len(crops) / s for name, s in seconds_of.items()},
    }


def ray_documented(args) -> dict:
    """Ray's documented batch-inference shape: read_images -> per-row transforms -> actor -> Parquet."""
    import ray
    import torch
    from torchvision import transforms
    from torchvision.models import get_model, get_model_weights

    weights = get_model_weights(args.model).DEFAULT
    ray.init(num_cpus=os.cpu_count(), logging_level=logging.WARNING)
    ds = ray.data.read_images(str(args.data), mode="RGB", include_paths=True)
    if args.images:
        ds = ds.limit(args.images)
    transform = transforms.Compose([transforms.ToTensor(), weights.transforms()])

    def preprocess(row):
        row["transformed_image"] = transform(row["image"]).numpy()
        del row["image"]
        return row

    device = device_of(args.device)

    class ResnetModel:
        def __init__(self):
            torch.manual_seed(0)
            self.model = get_model(args.model, weights=None).eval().to(device)

        def __call__(self, batch):
            with torch.inference_mode():
                prediction = self.model(torch.as_tensor(batch["transformed_image"], device=device)).cpu()
            done = np.full(len(prediction), time.time())  # only for the steady-rate figure
            return {"path": batch["path"], "predicted_label": prediction.argmax(dim=1).numpy(), "done_at": done}

    out = Path(args.workdir) / "ray_documented_out"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    wall_start = time.time()
    ds.map(preprocess).map_batches(
        ResnetModel,
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=args.batch_size,
        num_gpus=1 if device == "cuda" else None,
    ).write_parquet(str(out))
    total = time.time() - process_started_at()  # from this process's launch: its imports count
    import pyarrow.parquet as pq

    done = np.sort(pq.read_table(out, columns=["done_at"]).column("done_at").to_numpy())
    first_n = int((done == done[0]).sum())
    steady = (len(done) - first_n) / (done[-1] - done[0])
    return {
        "images": len(done),
        "steady_s": len(done) / steady,
        "run_s": total,
        "startup_s": done[0] - wall_start,
        "steady_window": [done[0], done[-1]],
    }


def resnet_batch_label(args) -> dict:
    out = Path(args.workdir) / "label_out"
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
        args.model,
        "--weights",
        "none",
        "--precision",
        args.precision,
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--top-k",
        "5",
        "--progress-every",
        "1",
        *shlex.split(args.label_args),
    ]
    if args.images:
        manifest = Path(args.workdir) / "manifest.txt"
        manifest.write_text("\n".join(str(p) for p in sorted(Path(args.data).glob("*.jpg"))[: args.images]))
        cmd[4] = str(manifest)
    launched = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    summary = parse_summary(result.stdout)
    processed = int(found(r"processed (\d+)", result.stdout).group(1))
    steady_from = launched + summary["start-up"] + summary["first batch"]
    # A run of one block has no steady phase: its rate is then the end-to-end one.
    steady_s = processed / summary["steady_rate"] if summary["steady_rate"] else summary["wall"]
    return {
        "images": processed,
        "steady_s": steady_s,
        "run_s": summary["wall"],
        "startup_s": summary["start-up"] + summary["first batch"],
        "steady_window": [steady_from, steady_from + summary["steady"]],
        "fitted_rate": fitted_rate(result.stderr, processed),
    }


PROGRESS = re.compile(r"^(\d\d):(\d\d):(\d\d) [^:]+: (\d+)/\d+\+? images", re.M)


def fitted_rate(progress_lines: str, processed: int) -> float:
    """Rows/s as the slope of the progress lines' counts against their times, over the
    rows from 10% to 90%: the same measure whatever the size of the lumps rows arrive in
    (the summary's steady rate leaves out the first lump, which the rest were timed
    against)."""
    points = [(int(h) * 3600 + int(m) * 60 + int(s), int(n)) for h, m, s, n in PROGRESS.findall(progress_lines)]
    middle = [(t, n) for t, n in points if 0.1 * processed <= n <= 0.9 * processed]
    if len(middle) < 3 or middle[-1][0] == middle[0][0]:
        return 0.0
    t, n = np.array(middle, dtype=float).T
    return float(np.polyfit(t - t[0], n, 1)[0])


def linked_folder(paths: list[Path], workdir: Path) -> Path:
    """A folder of hard links to `paths` (the first N generated images), made once."""
    folder = workdir / f"images-{len(paths)}"
    if not folder.exists():
        folder.mkdir(parents=True)
        for path in paths:
            os.link(path, folder / path.name)
    return folder


def process_started_at() -> float:
    """Wall-clock time this process was launched (from /proc), so that imports count."""
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


SUMMARY = re.compile(
    r"wall ([\d.]+)s = start-up ([\d.]+)s \+ first batch ([\d.]+)s \+ steady ([\d.]+)s"
    r"(?: \(([\d.]+) images/s\))? \+ shutdown ([\d.]+)s"
)


def parse_summary(stdout: str) -> dict:
    """The wall-time split of `resnet-batch label`'s summary line, in seconds (steady_rate: images/s)."""
    wall, startup, first, steady, rate, shutdown = found(SUMMARY, stdout).groups()
    return {
        "wall": float(wall),
        "start-up": float(startup),
        "first batch": float(first),
        "steady": float(steady),
        "steady_rate": float(rate or 0),
        "shutdown": float(shutdown),
    }


CONTENDERS = {"bare": bare_forward, "ray_doc": ray_documented, "label": resnet_batch_label}
TITLES = {"bare": "bare model forward", "ray_doc": "Ray documented pipeline", "label": "resnet-batch label"}


def measure(name: str, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--_child",
        name,
        "--data",
        str(args.data),
        "--images",
        str(args.images),
        "--model",
        args.model,
        "--precision",
        args.precision,
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--workdir",
        str(args.workdir),
        "--calls",
        str(args.calls),
        "--threads",
        str(args.threads),
        "--layouts",
        args.layouts,
        f"--label-args={args.label_args}",
    ]
    gpu = GpuMonitor() if device_of(args.device) == "cuda" else None
    try:
        # The bare forward runs under the model actor's allocator settings, as the job's actor does.
        out, wall, peak = run_measured(cmd, env=ALLOCATOR_ENV if name == "bare" else None)
    finally:
        if gpu:
            gpu.stop()
    result = json.loads(out.strip().splitlines()[-1])
    # End to end from the contender's own launch (the job's summary for label): not this
    # wrapper's, whose child process start would count against it.
    result.update(
        wall_s=result["run_s"],
        peak_rss_gib=peak / 2**30,
        rate=result["images"] / result["steady_s"],
        end_to_end=result["images"] / result["run_s"],
    )
    if gpu:
        steady_start, steady_end = result["steady_window"]
        result.update(
            sm_steady=gpu.mean(steady_start, steady_end, 1),
            jpg_steady=gpu.mean(steady_start, steady_end, 2),
            sm_samples=gpu.samples,
        )
    return result


def print_table(results: dict, args) -> None:
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(
        f"\n{args.model}, {args.images} JPEGs, batch {args.batch_size}, precision {args.precision}, "
        f"device {args.device}; {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; "
        f"bare forward: best of {args.layouts} (calls at once x torch threads)"
        + (f", {results['bare']['layout']} won" if "bare" in results else "")
    )
    gpu = any("sm_steady" in r for r in results.values())
    print(
        "| contender | steady images/s | x bare | x Ray doc | end-to-end images/s | wall s | start-up s "
        "| peak RSS GiB |" + (" SM % steady | NVJPG % steady |" if gpu else "")
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if gpu else ""))
    bare, doc = results.get("bare", {}).get("rate"), results.get("ray_doc", {}).get("rate")
    for name, r in results.items():
        startup = f"{r['startup_s']:.1f}" if "startup_s" in r else "-"
        use = f" {r['sm_steady']:.0f} | {r['jpg_steady']:.0f} |" if gpu else ""
        print(
            f"| {TITLES[name]} | {r['rate']:.1f} | {_ratio(r['rate'], bare)} | {_ratio(r['rate'], doc)} "
            f"| {r['end_to_end']:.1f} | {r['wall_s']:.1f} | {startup} | {r['peak_rss_gib']:.2f} |" + use
        )
    if results.get("label", {}).get("fitted_rate"):
        print(
            f"\nresnet-batch label, rows/s fitted to its progress lines from 10% to 90% of the rows: "
            f"{results['label']['fitted_rate']:.1f}"
        )


def job_plan(args, on_cpu: bool):
    from resnet_batch.model.weights import resolve_weights

    cfg = LabelConfig.of(
        inputs=("-",),
        output="-",
        model=args.model,
        weights="none",
        precision=args.precision,
        device="cpu" if on_cpu else "cuda",
    )
    cluster = Cluster.here(os.cpu_count() or 1, gpus=0 if on_cpu else 1)
    return make_plan(cfg, resolve_weights(args.model, "none"), cluster)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of JPEGs (generated if missing)")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, help="default: the job's (256 on a GPU; on CPU 32, 64 for bf16)")
    p.add_argument(
        "--calls",
        type=int,
        help="bare forward: calls at once (default as the job's actor: one per core on CPU, 2 on a GPU)",
    )
    p.add_argument(
        "--threads", type=int, help="bare forward: torch threads per call (default as the job: 1 on CPU, 4 on a GPU)"
    )
    p.add_argument(
        "--layouts",
        help="bare forward: CALLSxTHREADS[,...] to try, the best counts (default: on a "
        f"GPU {','.join(BARE_GPU_LAYOUTS)}; on a CPU as the job's actor)",
    )
    p.add_argument("--label-args", default="", help='more `label` options, e.g. "--cpu-decode-share 0.3"')
    p.add_argument("--only", nargs="*", choices=list(CONTENDERS), default=list(CONTENDERS))
    p.add_argument("--workdir", type=Path, default=Path("/tmp/resnet-batch-bench"))
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args()
    on_cpu = device_of(args.device) == "cpu"
    plan = job_plan(args, on_cpu)  # what the job would run with on this machine
    if not args.layouts:  # a GPU: the best of a few; a CPU: as the job's actor, unless told
        tried = BARE_GPU_LAYOUTS if not on_cpu and not (args.calls or args.threads) else ()
        args.layouts = (
            ",".join(tried) or f"{args.calls or plan.calls_per_actor}x{args.threads or plan.threads_per_call}"
        )
    args.calls = args.calls or plan.calls_per_actor
    args.threads = args.threads or plan.threads_per_call
    args.batch_size = args.batch_size or plan.batch_size
    if args._child:
        print(json.dumps(CONTENDERS[args._child](args)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    if len(list(args.data.glob("*.jpg"))) < args.images:  # a folder of real photos is used as it is
        ensure_images(args.data, args.images)
    results = {}
    for name in args.only:
        print(f"running {TITLES[name]} ...", file=sys.stderr, flush=True)
        results[name] = measure(name, args)
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
