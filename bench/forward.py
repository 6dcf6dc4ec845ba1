"""What each CPU setting of the model actor is worth: the bare forward with and without
BatchNorm folding and the actor's allocator environment (inference.ALLOCATOR_ENV).

    python bench/forward.py                                   # resnet18, fp32, batch 32
    python bench/forward.py --precision bf16 --batch-size 64
    python bench/forward.py --model resnet50 --rounds 3

Each variant runs in a fresh process (the allocator environment only takes effect at
process start), on a thread other than the main one as in a Ray actor, with channels_last
and the given torch threads. Rounds alternate the variants, so drift on a shared machine
spreads over all of them; the table gives the median of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from resnet_batch.model.settings import ALLOCATOR_ENV

VARIANTS = {
    "torchvision model, glibc defaults": (False, False),
    "BatchNorm folded": (True, False),
    "allocator environment": (False, True),
    "both (the job's actor)": (True, True),
}

CHILD = """
import json, resource, sys, threading, time, torch
from resnet_batch.model.models import fold_batch_norms, forward_stages
from resnet_batch.model.weights import build_model
from resnet_batch.model.weights import resolve_weights
model_name, precision, batch, threads, fold, passes = sys.argv[1:7]
torch.set_num_threads(int(threads))
model = build_model(resolve_weights(model_name, "none"))
model = (fold_batch_norms(model) if fold == "1" else model).to(memory_format=torch.channels_last)
x = torch.rand(int(batch), 3, 224, 224).contiguous(memory_format=torch.channels_last)
result = {}
def run():
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        forward_stages(model, x, 4, True)  # warm-up
        start = time.perf_counter()
        for _ in range(int(passes)):
            forward_stages(model, x, 4, True)
        result["rate"] = int(batch) * int(passes) / (time.perf_counter() - start)
    result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = threading.Thread(target=run); t.start(); t.join()
print(json.dumps(result))
"""


def run_variant(args, fold: bool, allocator: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if allocator:
        env.update(ALLOCATOR_ENV)
    cmd = [
        sys.executable,
        "-c",
        CHILD,
        args.model,
        args.precision,
        str(args.batch_size),
        str(args.threads or os.cpu_count()),
        "1" if fold else "0",
        str(args.passes),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--passes", type=int, default=8, help="timed forward passes per round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (fold, allocator) in VARIANTS.items():
            runs[name].append(run_variant(args, fold, allocator))
    base = median([r["rate"] for r in runs[next(iter(VARIANTS))]])
    print(
        f"{args.model}, {args.precision}, batch {args.batch_size}, {args.threads or os.cpu_count()} threads, "
        f"median of {args.rounds} rounds"
    )
    print("| variant | images/s | x defaults | max RSS MiB |")
    print("| --- | --- | --- | --- |")
    for name, results in runs.items():
        rate = median([r["rate"] for r in results])
        rss = median([r["max_rss_mib"] for r in results])
        print(f"| {name} | {rate:.1f} | {rate / base:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
