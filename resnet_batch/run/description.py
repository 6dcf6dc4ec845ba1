"""What a label run writes: its columns and their shapes, the run description stored with
them, and how many rows a part file may hold. Torch-free; the driver decides all of it
before any work starts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pyarrow as pa

from .. import __version__
from ..core.columns import EMBEDDING_DTYPES, REVIEW_COLUMNS, SPATIAL_SHAPE, VALID, output_schema, with_run_metadata
from ..data.preprocessing import WholeImage
from ..model.registry import POOLED, STAGE_STRIDES, STAGES, feature_width, stage_width
from .config import LabelConfig

if TYPE_CHECKING:
    from ..model.weights import ResolvedWeights


# A part file is one Parquet row group, written by one task that holds it in memory: bound
# both. Readers then stream a row group at a time, whatever the features' size.
MAX_FILE_BYTES = 256 * 2**20
ROW_OVERHEAD_BYTES = 1024  # path, labels, probabilities, error and manifest columns, generously


def whole_image(cfg: LabelConfig, resolved: ResolvedWeights) -> WholeImage | None:
    return WholeImage(cfg.resize or resolved.preprocessing.resize_size) if cfg.crop == "none" else None


def spatial_info(cfg: LabelConfig, resolved: ResolvedWeights) -> dict | None:
    """The spatial map's description, kept in the run's metadata."""
    if not cfg.spatial:
        return None
    stride = STAGE_STRIDES[cfg.spatial]
    channels = stage_width(cfg.model, cfg.spatial)
    cells = math.ceil(resolved.preprocessing.crop_size / stride)
    return {
        "column": f"spatial_{cfg.spatial}",
        "stage": cfg.spatial,
        "stride": stride,
        "dtype": "float16",
        "layout": "(C, H, W) flattened C-major: reshape(C, H, W)",
        # --crop center: one shape for all rows; --crop none: each row's is in its own columns
        "shape": [channels, cells, cells] if cfg.crop == "center" else None,
        "shape_column": SPATIAL_SHAPE if cfg.crop == "none" else None,
        "valid_column": VALID if cfg.crop == "none" else None,
        "cell_centre": "cell (i, j) is centred on resized pixel (stride * j, stride * i); "
        "original pixel = resized pixel / scale",
    }


def run_info(cfg: LabelConfig, resolved: ResolvedWeights, extra_columns: list[str]) -> dict:
    whole = whole_image(cfg, resolved)
    geometry = whole.describe() if whole else {"crop": "center"}
    return {
        "model": cfg.model,
        "weights": resolved.weights,
        "weights_source": resolved.source.kind,
        "preprocessing": {"from_weights": resolved.preprocess_from, **resolved.preprocessing.describe(), **geometry},
        "classes": len(resolved.categories),
        "labels": cfg.labels,
        "top_k": cfg.top_k,
        "embeddings": POOLED in cfg.features,
        "embedding_dtype": cfg.embedding_dtype,
        "embedding_dim": resolved.embedding_dim if POOLED in cfg.features else 0,
        "features": list(cfg.features),
        "stage_dims": {s: stage_width(cfg.model, s) for s in cfg.features if s in STAGES},
        "spatial": spatial_info(cfg, resolved),
        "review": REVIEW_COLUMNS | {"review_below": cfg.review_below} if cfg.top_k else None,
        "precision": cfg.precision,
        "extra_columns": extra_columns,
        "package": "resnet-batch",
        "package_version": __version__,
    }


def run_schema(
    cfg: LabelConfig, resolved: ResolvedWeights, extra_fields: tuple[pa.Field, ...], info: dict
) -> pa.Schema:
    schema = output_schema(
        resolved.embedding_dim if POOLED in cfg.features else None,
        cfg.embedding_dtype,
        cfg.top_k > 0,
        extra_fields,
        stages=info["stage_dims"],
        spatial=cfg.spatial,
        whole_image=cfg.crop == "none",
        needs_review=cfg.review_below is not None,
    )
    return with_run_metadata(schema, info)


def row_bytes(cfg: LabelConfig, resolved: ResolvedWeights) -> int:
    """An upper bound on one row's size in memory (and so uncompressed in Parquet)."""
    row = ROW_OVERHEAD_BYTES
    width = EMBEDDING_DTYPES[cfg.embedding_dtype].bit_width // 8
    row += sum(width * feature_width(cfg.model, f) for f in cfg.features)
    if cfg.spatial:
        stride = STAGE_STRIDES[cfg.spatial]
        whole = whole_image(cfg, resolved)
        if whole:  # the largest padded shape
            width_px, height_px = whole.padded_size(whole.max_size, whole.resize)
            cells = math.ceil(width_px / stride) * math.ceil(height_px / stride)
        else:
            cells = math.ceil(resolved.preprocessing.crop_size / stride) ** 2
        row += 2 * stage_width(cfg.model, cfg.spatial) * cells
    return row


def rows_per_file(cfg: LabelConfig, resolved: ResolvedWeights) -> int:
    """--rows-per-file, lowered so that a part file (one row group) stays within MAX_FILE_BYTES."""
    return max(1, min(cfg.rows_per_file, MAX_FILE_BYTES // row_bytes(cfg, resolved)))
