"""What a label run writes: its columns and their shapes, the run description stored with
them, and how many rows a part file may hold. Torch-free; the driver decides all of it
before any work starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from .. import __version__
from ..core.columns import (
    EMBEDDING_DTYPES,
    REVIEW_COLUMNS,
    SPATIAL_SHAPE,
    VALID,
    OutputColumns,
    spatial_column,
    with_run_metadata,
)
from ..data.preprocessing import WholeImage
from ..model.registry import POOLED, STAGE_STRIDES, STAGES, feature_width, map_cells, stage_width
from ..output.record import RunRecord
from .label_config import ComputeOptions, LabelConfig

if TYPE_CHECKING:
    from ..model.weights import ResolvedWeights


# A part file is one Parquet row group, written by one task that holds it in memory: bound
# both. Readers then stream a row group at a time, whatever the features' size.
MAX_FILE_BYTES = 256 * 2**20
ROW_OVERHEAD_BYTES = 1024  # path, labels, probabilities, error and manifest columns, generously


def whole_image(compute: ComputeOptions, resolved: ResolvedWeights) -> WholeImage | None:
    return WholeImage(compute.resize or resolved.preprocessing.resize_size) if compute.crop == "none" else None


def spatial_info(compute: ComputeOptions, resolved: ResolvedWeights) -> dict | None:
    """The spatial map's description, kept in the run's metadata."""
    if not compute.spatial:
        return None
    stride = STAGE_STRIDES[compute.spatial]
    channels = stage_width(compute.model, compute.spatial)
    cells = map_cells(resolved.preprocessing.crop_size, stride)
    return {
        "column": spatial_column(compute.spatial),
        "stage": compute.spatial,
        "stride": stride,
        "dtype": "float16",
        "layout": "(C, H, W) flattened C-major: reshape(C, H, W)",
        # --crop center: one shape for all rows; --crop none: each row's is in its own columns
        "shape": [channels, cells, cells] if compute.crop == "center" else None,
        "shape_column": SPATIAL_SHAPE if compute.crop == "none" else None,
        "valid_column": VALID if compute.crop == "none" else None,
        "cell_centre": "cell (i, j) is centred on resized pixel (stride * j, stride * i); "
        "original pixel = resized pixel / scale",
    }


def run_record(
    compute: ComputeOptions, precision: str, resolved: ResolvedWeights, extra_columns: list[str]
) -> RunRecord:
    """The record of a run with these settings, before anything ran."""
    whole = whole_image(compute, resolved)
    geometry = whole.describe() if whole else {"crop": "center"}
    return RunRecord(
        model=compute.model,
        weights=resolved.weights,
        weights_source=resolved.source.kind,
        preprocessing={"from_weights": resolved.preprocess_from, **resolved.preprocessing.describe(), **geometry},
        classes=len(resolved.categories),
        labels=compute.labels,
        top_k=compute.top_k,
        embeddings=POOLED in compute.features,
        embedding_dtype=compute.embedding_dtype,
        embedding_dim=resolved.embedding_dim if POOLED in compute.features else 0,
        features=list(compute.features),
        stage_dims={s: stage_width(compute.model, s) for s in compute.features if s in STAGES},
        spatial=spatial_info(compute, resolved),
        review=REVIEW_COLUMNS | {"review_below": compute.review_below} if compute.top_k else None,
        precision=precision,
        extra_columns=extra_columns,
        package="resnet-batch",
        package_version=__version__,
    )


def run_schema(
    compute: ComputeOptions, resolved: ResolvedWeights, extra_fields: tuple[pa.Field, ...], record: RunRecord
) -> pa.Schema:
    schema = OutputColumns(
        resolved.embedding_dim if POOLED in compute.features else None,
        compute.embedding_dtype,
        compute.top_k > 0,
        stages=record.stage_dims or {},
        spatial=compute.spatial,
        whole_image=compute.crop == "none",
        needs_review=compute.review_below is not None,
    ).schema(extra_fields)
    return with_run_metadata(schema, record.to_json())


def row_bytes(compute: ComputeOptions, resolved: ResolvedWeights) -> int:
    """An upper bound on one row's size in memory (and so uncompressed in Parquet)."""
    row = ROW_OVERHEAD_BYTES
    width = EMBEDDING_DTYPES[compute.embedding_dtype].bit_width // 8
    row += sum(width * feature_width(compute.model, f) for f in compute.features)
    if compute.spatial:
        stride = STAGE_STRIDES[compute.spatial]
        whole = whole_image(compute, resolved)
        if whole:  # the largest padded shape
            width_px, height_px = whole.padded_size(whole.max_size, whole.resize)
            cells = map_cells(width_px, stride) * map_cells(height_px, stride)
        else:
            cells = map_cells(resolved.preprocessing.crop_size, stride) ** 2
        row += 2 * stage_width(compute.model, compute.spatial) * cells
    return row


def rows_per_file(cfg: LabelConfig, resolved: ResolvedWeights) -> int:
    """--rows-per-file, lowered so that a part file (one row group) stays within MAX_FILE_BYTES."""
    return max(1, min(cfg.execution.rows_per_file, MAX_FILE_BYTES // row_bytes(cfg.compute, resolved)))
