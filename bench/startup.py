"""Where the seconds of a small job go, from launch to exit.

    python bench/startup.py                  # 20 and 1,000 generated JPEGs, resnet18, then a no-op resume
    python bench/startup.py --images 20 --runs 3
    python bench/startup.py --images 20 --runs 5 --trees /tmp/oldtree .   # old and new code, run by run

Two views:
- components, each timed alone in a fresh process: the driver's imports, torch +
  torchvision (what the weights thread and every model actor import), Ray's start and
  stop, a first remote task, building the model;
- whole runs of `resnet-batch label` (launch to exit, measured outside the process) with
  the summary's own split: start-up (imports, weights, Ray, listing), first batch (worker and
  actor start, model build, first decode and forward), steady, shutdown (last saves, the
  exactly-once check, stopping Ray).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import DEFAULT_DATA, SUMMARY, ensure_images, linked_folder  # noqa: E402

COMPONENTS = {
    "python + driver imports (cli, config, pipeline, ray.data)": "import resnet_batch.cli.main, "
    "resnet_batch.config.label_config, resnet_batch.run.pipeline",
    "torch + torchvision (weights thread, model actors)": "import torch, torchvision",
    "decode stage imports (decode workers)": "import resnet_batch.data.decode",
    "ray.init (local, no dashboard)": "import ray, time; t = time.time(); "
    "ray.init(include_dashboard=False, logging_level='ERROR'); "
    "print(time.time() - t)",
    "first remote task after ray.init": "import ray, time; "
    "ray.init(include_dashboard=False, logging_level='ERROR'); t = time.time(); "
    "ray.get(ray.remote(lambda: 1).remote()); print(time.time() - t)",
    "ray.shutdown": "import ray, time; ray.init(include_dashboard=False, logging_level='ERROR'); "
    "ray.get(ray.remote(lambda: 1).remote()); t = time.time(); ray.shutdown(); print(time.time() - t)",
    "build resnet18 + fold BN (after imports)": "import time; "
    "from resnet_batch.model.models import fold_batch_norms; from resnet_batch.model.weights import build_model; "
    "from resnet_batch.model.weights import resolve_weights; "
    "t = time.time(); fold_batch_norms(build_model(resolve_weights('resnet18', 'none'))); print(time.time() - t)",
}


def time_component(code: str) -> float:
    """Seconds: what the snippet prints, or the whole process's wall time when it prints nothing."""
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.monotonic() - start
    printed = result.stdout.strip().splitlines()
    return float(printed[-1]) if printed else wall


def run_label(folder: Path, out: Path, mode: str, extra: list[str], tree: Path) -> dict:
    """One `label` run of the code in `tree` (a checkout, e.g. `git worktree add /tmp/oldtree REV`)."""
    # Checkouts from before the layered layout have no `python -m resnet_batch`.
    entry = "resnet_batch" if (tree / "resnet_batch" / "__main__.py").exists() else "resnet_batch.cli"
    cmd = [
        sys.executable,
        "-m",
        entry,
        "label",
        str(folder),
        "--output",
        str(out),
        "--model",
        "resnet18",
        "--weights",
        "none",
        "--mode",
        mode,
        *extra,
    ]
    start = time.monotonic()
    # In the tree: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    # (and Ray's workers take the driver's sys.path).
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    wall = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    phases = SUMMARY.search(result.stdout)
    return {"process wall": wall, "summary": phases.group(0) if phases else result.stdout}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, nargs="+", default=[20, 1000])
    p.add_argument("--runs", type=int, default=2, help="runs of each job size")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/resnet-batch-startup"))
    p.add_argument("--precision", default="fp32")
    p.add_argument("--skip-components", action="store_true")
    p.add_argument(
        "--trees",
        type=Path,
        nargs="+",
        default=[Path(__file__).resolve().parents[1]],
        help="checkouts to compare, alternated run by run (default: this one)",
    )
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    if not args.skip_components:
        print("components, each in a fresh process (seconds):")
        for name, code in COMPONENTS.items():
            print(f"  {name:60s} {time_component(code):6.2f}")

    paths = ensure_images(args.data, max(args.images))
    for n in args.images:
        folder = linked_folder(paths[:n], args.workdir)
        out = args.workdir / f"out-{n}"
        for i in range(args.runs):
            for tree in args.trees:
                shutil.rmtree(out, ignore_errors=True)
                r = run_label(folder, out, "error", ["--precision", args.precision], tree)
                print(f"{tree}: {n} images, run {i + 1}: {r['process wall']:.1f}s launch to exit; {r['summary']}")
        for _ in range(args.runs):
            for tree in args.trees:
                r = run_label(folder, out, "resume", ["--precision", args.precision], tree)
                print(f"{tree}: {n} images, resume with nothing left: {r['process wall']:.1f}s launch to exit")


if __name__ == "__main__":
    main()
