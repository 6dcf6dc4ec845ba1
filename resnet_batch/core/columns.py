"""The output schema, declared once, and the file-level metadata that describes a run."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .. import __version__

EMBEDDING_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
METADATA_KEY = b"resnet_batch"
SPATIAL_SHAPE = "spatial_shape"  # per row (C, H, W), when shapes vary (--crop none)
VALID = "valid"  # per row: the map cells on the image, [x0, y0, x1, y1) (x1, y1 exclusive)


def output_schema(
    embedding_dim: int | None,
    embedding_dtype: str = "float32",
    with_topk: bool = True,
    extra_fields: tuple[pa.Field, ...] = (),
    *,
    stages: dict[str, int] | None = None,
    spatial: str | None = None,
    whole_image: bool = False,
    needs_review: bool = False,
) -> pa.Schema:
    """Columns in contract order; top-k and feature columns are left out when not asked for.

    `stages` maps c2..c5 to their widths (pooled per-stage vectors); `spatial` names the
    stage whose map is written, flattened C-major, as float16. With `whole_image`
    (--crop none) shapes vary per row: `spatial_shape` and `valid` say each row's, and
    `scale` how its pixels relate to the original's. With top-k come the review columns
    `margin` and `entropy`, and `needs_review` when --review-below is given. `extra_fields` are manifest columns
    carried through to the output, appended last.
    """
    value_type = EMBEDDING_DTYPES[embedding_dtype]
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
            pa.field("margin", pa.float32()),
            pa.field("entropy", pa.float32()),
        ]
        if needs_review:
            fields.append(pa.field("needs_review", pa.bool_()))
    if embedding_dim:
        fields.append(pa.field("embedding", pa.list_(value_type, embedding_dim)))
    fields += [pa.field(stage, pa.list_(value_type, width)) for stage, width in (stages or {}).items()]
    if spatial:
        fields.append(pa.field(f"spatial_{spatial}", pa.list_(pa.float16())))
        if whole_image:
            fields += [pa.field(SPATIAL_SHAPE, pa.list_(pa.int32(), 3)), pa.field(VALID, pa.list_(pa.int32(), 4))]
    if whole_image:
        fields.append(pa.field("scale", pa.float32()))
    fields.append(pa.field("error", pa.string()))
    return pa.schema([*fields, *extra_fields])


def _all_output_columns() -> frozenset[str]:
    widest = output_schema(1, stages={"c2": 1, "c3": 1, "c4": 1, "c5": 1}, spatial="c5", whole_image=True,
                           needs_review=True)
    return frozenset([*widest.names, "spatial_c4", "image"])


# Names a manifest's own columns may not take: every column a run can write (and the
# decoded image that travels between stages).
RESERVED_COLUMNS = _all_output_columns()


def with_run_metadata(schema: pa.Schema, run_info: dict) -> pa.Schema:
    """Attach the run description as one JSON value plus flat keys for quick lookups."""
    info = {"version": __version__, **run_info}
    meta = {METADATA_KEY: json.dumps(info, sort_keys=True).encode()}
    for key in ("model", "weights", "top_k", "embedding_dtype", "precision"):
        if key in info:
            meta[f"resnet_batch.{key}".encode()] = str(info[key]).encode()
    if info.get("spatial"):
        meta[b"resnet_batch.spatial"] = json.dumps(info["spatial"], sort_keys=True).encode()
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


def _list_array(lengths: np.ndarray, values: np.ndarray, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """list<...> from the valid rows' values laid end to end, null where `valid` is False."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type), type=pa.list_(value_type),
                                    mask=pa.array(~valid))


def _ragged_lists(rows: np.ndarray, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """(N, K) array -> list<...> with K items per valid row and nulls elsewhere."""
    lengths = np.where(valid, rows.shape[1], 0)
    return _list_array(lengths, np.asarray(rows)[valid].reshape(-1), valid, value_type)


def _ragged_rows(rows: list, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """Per-row 1-D arrays of any lengths -> list<...>, null where `valid` is False."""
    lengths = np.array([len(r) if ok else 0 for r, ok in zip(rows, valid)], dtype=np.int64)
    kept = [np.asarray(r) for r, ok in zip(rows, valid) if ok]
    return _list_array(lengths, np.concatenate(kept) if kept else np.zeros(0, np.float16), valid, value_type)


def build_table(
    schema: pa.Schema,
    batch: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray | list],
    categories: tuple[str, ...] | list[str],
) -> pa.Table:
    """Assemble one output batch, cast to the declared schema.

    `batch` carries path, width, height, error ("" when none) and any extra columns;
    `outputs` the model's arrays by column name (topk_ids, topk_probs, embedding, c2..c5,
    spatial_cN as one flat array per row, spatial_shape, valid), one row per input row
    (rows with an error hold ignored values).
    """
    errors = [str(e) if e else None for e in batch["error"]]
    valid = np.array([e is None for e in errors], dtype=bool)
    columns: dict[str, pa.Array] = {
        "path": pa.array([str(p) for p in batch["path"]], type=pa.string()),
        "width": _sizes_to_nullable(batch["width"]),
        "height": _sizes_to_nullable(batch["height"]),
        "error": pa.array(errors, type=pa.string()),
    }
    if "topk_ids" in schema.names:
        ids = outputs["topk_ids"]
        labels = np.asarray(categories, dtype=object)[ids] if len(ids) else ids
        columns["topk_ids"] = _ragged_lists(ids, valid, pa.int32())
        columns["topk_labels"] = _ragged_lists(labels, valid, pa.string())
        columns["topk_probs"] = _ragged_lists(outputs["topk_probs"], valid, pa.float32())
    for field in schema:
        values = outputs.get(field.name)
        if field.name in columns:
            continue
        if values is None:  # manifest columns, carried through
            columns[field.name] = pa.array(list(batch[field.name]), type=field.type)
        elif pa.types.is_fixed_size_list(field.type):
            columns[field.name] = _fixed_lists(values, valid, field.type.value_type)
        elif pa.types.is_list(field.type):
            columns[field.name] = _ragged_rows(values, valid, field.type.value_type)
        else:
            columns[field.name] = pa.array(np.asarray(values), type=field.type, mask=~valid)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
