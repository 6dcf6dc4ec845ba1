"""Deviation of reduced precision from fp32 on the same crops: what `--precision auto` costs.

    python bench/precision.py --model resnet50 --precision bf16 --images 256

Prints the relative logit error (max |a-b| / max |b| per image, then its median and max),
embedding cosine similarity, and top-1/top-5 agreement with fp32. Weights are random-init
(`--weights none`, BN statistics perturbed) unless --weights names a checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from resnet_batch.data.decode import DecodeStage
from resnet_batch.model.network import Network
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers import scramble_batch_norms  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--weights", default="none")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--data", type=Path, default=DATA)
    args = p.parse_args()

    paths = sorted(args.data.glob("*.jpg"))[: args.images]
    if not paths:
        raise SystemExit(f"no JPEGs in {args.data}; run bench/bench.py once to generate them")
    resolved = resolve_weights(args.model, args.weights)
    crops = DecodeStage(resolved.preprocessing)({"path": np.array([str(x) for x in paths], dtype=object)})["image"]
    base = InferenceSettings(weights=resolved, precision="fp32", device=args.device)
    ref = Network(base)
    if args.weights == "none":  # random BN statistics make activations realistic in scale
        torch.manual_seed(1)
        scramble_batch_norms(ref.model)
    low = Network(dataclasses.replace(base, precision=args.precision))
    low.model.load_state_dict(ref.model.state_dict())

    outs: dict[str, list] = {"fp32": [], args.precision: []}
    for i in range(0, len(crops), 32):
        outs["fp32"].append(tuple(ref.run_model(crops[i : i + 32]).values()))  # (embedding, logits)
        outs[args.precision].append(tuple(low.run_model(crops[i : i + 32]).values()))
    (e32, l32), (elo, llo) = [tuple(torch.cat(t) for t in zip(*outs[k], strict=False)) for k in outs]
    rel = ((llo - l32).abs().amax(1) / l32.abs().amax(1)).numpy()
    cos = torch.nn.functional.cosine_similarity(elo, e32, dim=1).numpy()
    top1 = (llo.argmax(1) == l32.argmax(1)).float().mean().item()
    top5 = np.mean(
        [
            len(set(a) & set(b)) / 5
            for a, b in zip(llo.topk(5).indices.tolist(), l32.topk(5).indices.tolist(), strict=False)
        ]
    )
    print(f"{args.model} {args.precision} vs fp32 on {len(crops)} images ({args.device}):")
    print(f"  relative logit error: median {np.median(rel):.4f}, max {rel.max():.4f}")
    print(f"  embedding cosine:     mean {cos.mean():.5f}, min {cos.min():.5f}")
    print(f"  top-1 agreement {100 * top1:.1f}%, top-5 overlap {100 * top5:.1f}%")


if __name__ == "__main__":
    main()
