"""Top-1/top-5 error on a labeled collection, through the same pipeline as `label`.

Labels come from ImageNet layouts: class folders named by WordNet id (`n01440764/x.jpg`),
file names that start with one (`n01440764_tench.JPEG`), or a manifest column holding a
class index or a WordNet id. Predictions are written as the usual Parquet output plus a
`label` column.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..core.columns import ERROR, PATH, TOPK_IDS
from ..core.errors import UsageError
from ..model.registry import ARCHITECTURES, V1

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


WNID = re.compile(r"^(n\d{8})")
LABEL_COLUMN = "label"
WORST_CLASSES_SHOWN = 10  # rows of the per-class table eval prints
# The line eval prints beside a run's error: torchvision's V1 ResNets, from the release records.
V1_REFERENCES = {
    m: ARCHITECTURES[m].release(V1) for m in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
}
# torchvision's published ImageNet-1K figures for the V1 weights (top-1 / top-5 error, %).


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    """ImageNet-1k WordNet ids in class-index order (shipped as package data)."""
    text = resources.files("resnet_batch").joinpath("imagenet_wnids.txt").read_text()
    return {wnid: i for i, wnid in enumerate(text.split())}


def label_from_path(path: str) -> int | None:
    """Class index from the parent folder or the file name, or None."""
    parts = path.replace("\\", "/").split("/")
    mapping = wnid_to_index()
    for part in (parts[-2] if len(parts) > 1 else "", parts[-1]):
        match = WNID.match(part)
        if match and match.group(1) in mapping:
            return mapping[match.group(1)]
    return None


def parse_label(value: object) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if text.isdigit() and int(text) < 1000:
        return int(text)
    return wnid_to_index().get(text)


def attach_labels(table: pa.Table, label_column: str | None) -> pa.Table:
    """Add the integer `label` column; every input must have one."""
    if label_column:
        if label_column not in table.column_names:
            raise UsageError(f"manifest has no label column {label_column!r}; columns: {', '.join(table.column_names)}")
        labels = [parse_label(v) for v in table.column(label_column).to_pylist()]
        table = table.drop_columns([label_column])
    else:
        labels = [label_from_path(p) for p in table.column(PATH).to_pylist()]
    missing = [p for p, lab in zip(table.column(PATH).to_pylist(), labels, strict=False) if lab is None]
    if missing:
        raise UsageError(
            f"{len(missing)} inputs have no ImageNet label (e.g. {missing[0]}); use class folders named by "
            "WordNet id, file names starting with one, or a manifest with --label-column (index or WordNet id)"
        )
    return table.append_column(LABEL_COLUMN, pa.array(labels, pa.int32()))


def wilson_interval(errors: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for an error rate, in percent."""
    if n == 0:
        return (0.0, 100.0)
    p = errors / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100 * max(0.0, centre - half), 100 * min(1.0, centre + half))


@dataclass(frozen=True)
class EvalReport:
    model: str
    weights: str
    images: int
    unreadable: int
    top1_errors: int
    top5_errors: int
    published: tuple[float, float] | None
    per_class: dict = field(default_factory=dict)  # true class index -> (images scored, top-1 misses, top-5 misses)
    class_names: tuple = ()

    @property
    def scored(self) -> int:
        return self.images - self.unreadable

    def top1(self) -> float:
        return 100 * self.top1_errors / self.scored if self.scored else float("nan")

    def top5(self) -> float:
        return 100 * self.top5_errors / self.scored if self.scored else float("nan")

    def lines(self) -> list[str]:
        lo1, hi1 = wilson_interval(self.top1_errors, self.scored)
        lo5, hi5 = wilson_interval(self.top5_errors, self.scored)
        pub = self.published
        out = [
            f"{self.model} {self.weights}: {self.scored} images scored, {self.unreadable} unreadable (not scored)",
            f"{'error rate':13}{'this run':>9}  {'95% CI':>15}  {'published':>9}",
            f"top-1 error  {self.top1():8.2f}%  [{lo1:5.2f}, {hi1:5.2f}]  "
            + (f"{pub[0]:8.2f}%" if pub else "       -"),
            f"top-5 error  {self.top5():8.2f}%  [{lo5:5.2f}, {hi5:5.2f}]  "
            + (f"{pub[1]:8.2f}%" if pub else "       -"),
            "torchvision V1 reference (top-1/top-5 error %): "
            + ", ".join(f"{m} {r.errors[0]:.2f}/{r.errors[1]:.2f}" for m, r in V1_REFERENCES.items()),
        ]
        return out + self.worst_classes()

    def worst_classes(self, shown: int = WORST_CLASSES_SHOWN) -> list[str]:
        """The per-class error table, worst top-1 error first (ties: more images first)."""
        if not self.per_class:
            return []
        ranked = sorted(self.per_class.items(), key=lambda kv: (-kv[1][1] / kv[1][0], -kv[1][0], kv[0]))
        width = max(len(self._name(c)) for c, _ in ranked[:shown])
        lines = [
            f"per class, worst first ({min(shown, len(ranked))} of {len(ranked)} classes):",
            f"  {'class':{width}}  {'images':>6}  {'top-1 err':>9}  {'top-5 err':>9}",
        ]
        for cls, (n, miss1, miss5) in ranked[:shown]:
            lines.append(f"  {self._name(cls):{width}}  {n:6d}  {100 * miss1 / n:8.1f}%  {100 * miss5 / n:8.1f}%")
        return lines

    def _name(self, cls: int) -> str:
        return f"{cls} {self.class_names[cls]}" if 0 <= cls < len(self.class_names) else str(cls)


def published_errors(model: str, weights: str) -> tuple[float, float] | None:
    """torchvision's published top-1/top-5 error for one of its releases (None for other weights)."""
    if model not in ARCHITECTURES or weights not in ARCHITECTURES[model].weights_names():
        return None
    return ARCHITECTURES[model].release(weights).errors


def score(output_files: list, fs: AbstractFileSystem, model: str, weights: str) -> EvalReport:
    """Count top-1/top-5 misses from the written predictions."""
    images = unreadable = top1 = top5 = 0
    per_class: dict[int, list[int]] = {}
    for part in output_files:
        with fs.open(part, "rb") as f:
            table = pq.read_table(f, columns=[TOPK_IDS, ERROR, LABEL_COLUMN])
        images += table.num_rows
        failed = pc.is_valid(table[ERROR])
        unreadable += pc.sum(failed).as_py() or 0
        for ids, error, label in zip(
            table[TOPK_IDS].to_pylist(), table[ERROR].to_pylist(), table[LABEL_COLUMN].to_pylist(), strict=False
        ):
            if error is None:
                counts = per_class.setdefault(label, [0, 0, 0])
                counts[0] += 1
                counts[1] += ids[0] != label
                counts[2] += label not in ids[:5]
    top1 = sum(c[1] for c in per_class.values())
    top5 = sum(c[2] for c in per_class.values())
    return EvalReport(
        model,
        weights,
        images,
        unreadable,
        top1,
        top5,
        published_errors(model, weights),
        {k: tuple(v) for k, v in per_class.items()},
        imagenet_names(),
    )


@lru_cache(maxsize=1)
def imagenet_names() -> tuple[str, ...]:
    """ImageNet-1K's class names by index (the labels eval scores against are its indices)."""
    return tuple(resources.files("resnet_batch").joinpath("imagenet_classes.txt").read_text().splitlines())
