"""The output schema, declared once, and the file-level metadata that describes a run."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from . import __version__

EMBEDDING_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
METADATA_KEY = b"resnet_batch"


def output_schema(
    embedding_dim: int | None,
    embedding_dtype: str = "float32",
    with_topk: bool = True,
    extra_fields: tuple[pa.Field, ...] = (),
) -> pa.Schema:
    """Columns in contract order; top-k and embedding columns are left out when disabled.

    `extra_fields` are manifest columns carried through to the output, appended last.
    """
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
    if with_topk:
        fields += [
            pa.field("topk_ids", pa.list_(pa.int32())),
            pa.field("topk_labels", pa.list_(pa.string())),
            pa.field("topk_probs", pa.list_(pa.float32())),
        ]
    if embedding_dim:
        fields.append(pa.field("embedding", pa.list_(EMBEDDING_DTYPES[embedding_dtype], embedding_dim)))
    fields.append(pa.field("error", pa.string()))
    return pa.schema([*fields, *extra_fields])


def with_run_metadata(schema: pa.Schema, run_info: dict) -> pa.Schema:
    """Attach the run description as one JSON value plus flat keys for quick lookups."""
    info = {"version": __version__, **run_info}
    meta = {METADATA_KEY: json.dumps(info, sort_keys=True).encode()}
    for key in ("model", "weights", "top_k", "embedding_dtype", "precision"):
        if key in info:
            meta[f"resnet_batch.{key}".encode()] = str(info[key]).encode()
    meta[b"resnet_batch.version"] = __version__.encode()
    return schema.with_metadata(meta)


def read_run_metadata(schema: pa.Schema) -> dict | None:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else None


def _sizes_to_nullable(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, dtype=np.int32)
    return pa.array(values, type=pa.int32(), mask=values < 0)


def _fixed_lists(rows: np.ndarray, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """(N, D) array -> fixed_size_list<D> with nulls where `valid` is False."""
    n, d = rows.shape
    flat = pa.array(np.ascontiguousarray(rows).reshape(n * d), type=value_type)
    return pa.FixedSizeListArray.from_arrays(flat, d, mask=pa.array(~valid))


def _ragged_lists(rows: np.ndarray, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """(N, K) array -> list<...> with K items per valid row and nulls elsewhere."""
    n, k = rows.shape
    lengths = np.where(valid, k, 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = pa.array(np.asarray(rows)[valid].reshape(-1), type=value_type)
    return pa.ListArray.from_arrays(pa.array(offsets), values, type=pa.list_(value_type), mask=pa.array(~valid))


def build_table(
    schema: pa.Schema,
    batch: dict[str, np.ndarray],
    topk_ids: np.ndarray | None,
    topk_probs: np.ndarray | None,
    categories: tuple[str, ...] | list[str],
    embeddings: np.ndarray | None,
) -> pa.Table:
    """Assemble one output batch, cast to the declared schema.

    `batch` carries path, width, height, error ("" when none) and any extra columns;
    the model arrays have one row per input row (rows with an error hold ignored values).
    """
    errors = [str(e) if e else None for e in batch["error"]]
    valid = np.array([e is None for e in errors], dtype=bool)
    columns: dict[str, pa.Array] = {
        "path": pa.array([str(p) for p in batch["path"]], type=pa.string()),
        "width": _sizes_to_nullable(batch["width"]),
        "height": _sizes_to_nullable(batch["height"]),
    }
    if "topk_ids" in schema.names:
        labels = np.asarray(categories, dtype=object)[topk_ids] if len(topk_ids) else topk_ids
        columns["topk_ids"] = _ragged_lists(topk_ids, valid, pa.int32())
        columns["topk_labels"] = _ragged_lists(labels, valid, pa.string())
        columns["topk_probs"] = _ragged_lists(topk_probs, valid, pa.float32())
    if "embedding" in schema.names:
        columns["embedding"] = _fixed_lists(embeddings, valid, schema.field("embedding").type.value_type)
    columns["error"] = pa.array(errors, type=pa.string())
    for field in schema:
        if field.name not in columns:
            columns[field.name] = pa.array(list(batch[field.name]), type=field.type)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
