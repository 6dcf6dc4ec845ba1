"""Train a linear probe on a resnet-batch output: a classifier on frozen backbone features.

    resnet-batch label photos/ --output feats/ --features pooled,c4
    python examples/linear_probe.py feats/ --feature embedding --save probe.pt

Each row's class is the name of its image's folder (photos/cat/1.jpg is a "cat"), as in
torchvision's ImageFolder. Rows are split into train and held-out sets by a hash of their
path, so the split is the same on every run. Features stream from the output through a
torch DataLoader (resnet_batch.output.features.read), a row group at a time, whatever its size;
only the probe's weights are kept in memory.
"""

from __future__ import annotations

import argparse
import posixpath
import zlib

import torch
from torch.utils.data import DataLoader, IterableDataset

from resnet_batch.output import features


def class_of(path: str) -> str:
    return posixpath.basename(posixpath.dirname(path))


def is_held_out(path: str, fraction: float) -> bool:
    """By class folder and file name, so the split holds wherever the images are stored."""
    key = posixpath.join(class_of(path), posixpath.basename(path))
    return zlib.crc32(key.encode()) % 1000 < fraction * 1000


class FeatureRows(IterableDataset):
    """(feature vector, class index) pairs of one split, streamed from the output."""

    def __init__(self, output: str, column: str, classes: dict[str, int], held_out: bool, fraction: float):
        self.output, self.column, self.classes = output, column, classes
        self.held_out, self.fraction = held_out, fraction

    def __iter__(self):
        for batch in features.read(self.output, [self.column], as_torch=True):
            for path, vector in zip(batch["path"], batch[self.column], strict=True):
                if is_held_out(path, self.fraction) == self.held_out:
                    yield vector.float(), self.classes[class_of(path)]


def list_classes(output: str) -> dict[str, int]:
    names = sorted({class_of(p) for batch in features.read(output, []) for p in batch["path"]})
    return {name: i for i, name in enumerate(names)}


def accuracy(probe: torch.nn.Module, rows: DataLoader) -> float:
    right = total = 0
    with torch.no_grad():
        for x, y in rows:
            right += int((probe(x).argmax(1) == y).sum())
            total += len(y)
    return right / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="a resnet-batch --output directory (local or fsspec URI)")
    parser.add_argument("--feature", default="embedding", help="a vector column: embedding, c2, c3, c4, c5")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--held-out", type=float, default=0.25, help="fraction of rows kept for evaluation")
    parser.add_argument("--save", help="write the probe's state dict here")
    args = parser.parse_args()

    classes = list_classes(args.output)
    width = next(features.read(args.output, [args.feature], batch_rows=1))[args.feature].shape[1]
    train = DataLoader(FeatureRows(args.output, args.feature, classes, False, args.held_out), args.batch_size)
    held_out = DataLoader(FeatureRows(args.output, args.feature, classes, True, args.held_out), args.batch_size)
    torch.manual_seed(0)
    # Standardise the features on the fly (BatchNorm without affine), then one linear layer.
    probe = torch.nn.Sequential(torch.nn.BatchNorm1d(width, affine=False), torch.nn.Linear(width, len(classes)))
    optimiser = torch.optim.AdamW(probe.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(args.epochs):
        probe.train()
        for x, y in train:
            if len(y) < 2:  # BatchNorm needs two rows
                continue
            loss = torch.nn.functional.cross_entropy(probe(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    probe.eval()
    print(f"classes: {len(classes)} ({', '.join(list(classes)[:5])}{', ...' if len(classes) > 5 else ''})")
    print(f"train accuracy: {accuracy(probe, train):.3f}")
    print(f"held-out accuracy: {accuracy(probe, held_out):.3f}")
    if args.save:
        torch.save({"state_dict": probe.state_dict(), "classes": list(classes), "feature": args.feature}, args.save)


if __name__ == "__main__":
    main()
