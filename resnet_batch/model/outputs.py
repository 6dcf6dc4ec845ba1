"""What every predictor shares, torch-free: a batch's output arrays before any model has
filled them (rows with an error keep these values, which build_table writes as nulls), and
the finished batch as a table, told to the job's reporter."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..core.columns import (
    ENTROPY,
    ERROR,
    MARGIN,
    NEEDS_REVIEW,
    SPATIAL_SHAPE,
    TOPK_IDS,
    TOPK_PROBS,
    VALID,
    build_table,
    spatial_column,
)
from ..core.reporting import ModelReporter
from .registry import column_of, feature_width
from .settings import InferenceSettings


def empty_outputs(settings: InferenceSettings, n: int) -> dict:
    k, dtype = settings.top_k, np.dtype(settings.embedding_dtype)
    out: dict = {
        TOPK_IDS: np.zeros((n, k), np.int32),
        TOPK_PROBS: np.zeros((n, k), np.float32),
        MARGIN: np.zeros(n, np.float32),
        ENTROPY: np.zeros(n, np.float32),
        NEEDS_REVIEW: np.zeros(n, bool),
    }
    for feature in settings.features:
        out[column_of(feature)] = np.zeros((n, feature_width(settings.weights.model, feature)), dtype)
    if settings.spatial:
        out[spatial_column(settings.spatial)] = [None] * n
        out[SPATIAL_SHAPE] = np.zeros((n, 3), np.int32)
        out[VALID] = np.zeros((n, 4), np.int32)
    return out


def finished_table(
    settings: InferenceSettings,
    schema: pa.Schema,
    batch: dict,
    errors: np.ndarray,
    outputs: dict,
    reporter: ModelReporter | None = None,
) -> pa.Table:
    """The batch's output rows; the reporter, if any, is told of them and of their error
    rows (per batch, so that progress moves by batches, not blocks)."""
    table = build_table(schema, {**batch, ERROR: errors}, outputs, settings.weights.categories)
    if reporter is not None:
        reporter.rows_finished(table.num_rows, table.num_rows - table.column(ERROR).null_count)
    return table
