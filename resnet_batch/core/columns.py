"""The output's columns, declared once in COLUMNS: the schema a run writes, the names a
manifest may not take, the file-level metadata that describes a run, and the building of
one batch's rows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .. import __version__

EMBEDDING_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
METADATA_KEY = b"resnet_batch"
STAGES = ("c2", "c3", "c4", "c5")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType | None  # None: sized or typed by the run (feature widths, --embedding-dtype)
    when: str  # which runs write it: always, topk, review_below, pooled, stage, spatial, whole_image
    doc: str


PATH = "path"  # what identifies an input: the key of resume, the final check and deduplication
WIDTH, HEIGHT = "width", "height"
TOPK_IDS, TOPK_LABELS, TOPK_PROBS = "topk_ids", "topk_labels", "topk_probs"
MARGIN, ENTROPY, NEEDS_REVIEW = "margin", "entropy", "needs_review"
EMBEDDING = "embedding"
SPATIAL_STAGES = ("c4", "c5")
SPATIAL_SHAPE, VALID, SCALE = "spatial_shape", "valid", "scale"
ERROR = "error"
IMAGE = "image"  # the decoded image, between the decode and model stages; never written


def error_category(error: str) -> str:
    """An error value's category: the part before its first colon ("decode_error: ...")."""
    return error.split(":", 1)[0]


def spatial_column(stage: str) -> str:
    return f"spatial_{stage}"


# Every column a label run can write, in the order it writes them; manifest columns follow.
COLUMNS = (
    Column(PATH, pa.string(), "always", "the input's identity: a normalised local path, a URI, or SHARD/MEMBER"),
    Column(WIDTH, pa.int32(), "always", "the image's width in pixels, as decoded (null when unreadable)"),
    Column(HEIGHT, pa.int32(), "always", "the image's height in pixels"),
    Column(TOPK_IDS, pa.list_(pa.int32()), "topk", "class indices, most probable first"),
    Column(TOPK_LABELS, pa.list_(pa.string()), "topk", "class names of topk_ids"),
    Column(TOPK_PROBS, pa.list_(pa.float32()), "topk", "softmax probabilities of topk_ids"),
    Column(
        MARGIN, pa.float32(), "topk", "top-1 minus top-2 probability (small: the model hesitates between two classes)"
    ),
    Column(ENTROPY, pa.float32(), "topk", "entropy of the whole softmax, in nats (0: certain; ln(classes): uniform)"),
    Column(
        NEEDS_REVIEW,
        pa.bool_(),
        "review_below",
        "top-1 probability under review_below (present when --review-below was given)",
    ),
    Column(EMBEDDING, None, "pooled", "the pooled backbone output, fixed-size list of --embedding-dtype"),
    *(
        Column(stage, None, "stage", f"{stage} average-pooled, fixed-size list of --embedding-dtype")
        for stage in STAGES
    ),
    *(
        Column(spatial_column(stage), pa.list_(pa.float16()), "spatial", f"the whole {stage} map, (C, H, W) flattened")
        for stage in SPATIAL_STAGES
    ),
    Column(SPATIAL_SHAPE, pa.list_(pa.int32(), 3), "whole_image", "per row (C, H, W) of the spatial map"),
    Column(
        VALID, pa.list_(pa.int32(), 4), "whole_image", "the map cells on the image, [x0, y0, x1, y1) (x1, y1 exclusive)"
    ),
    Column(SCALE, pa.float32(), "whole_image", "resized pixels per original pixel"),
    Column(ERROR, pa.string(), "always", "why the image has no outputs (category: detail); null when it has"),
)
BY_NAME = {c.name: c for c in COLUMNS}
# Names a manifest's own columns may not take: every column a run can write, and the
# decoded image that travels between stages.
RESERVED_COLUMNS = frozenset([*BY_NAME, IMAGE])
# The pipeline's own columns between stages (tar offsets, listing errors, bytes carried in
# the row, GPU decoding's hand-off): named under this prefix, which a manifest may not use,
# so that no input's column can pass for one.
INTERNAL_PREFIX = "__resnet_batch_"
REVIEW_COLUMNS = {name: BY_NAME[name].doc for name in (MARGIN, ENTROPY, NEEDS_REVIEW)}


@dataclass(frozen=True)
class OutputColumns:
    """Which of COLUMNS a run writes, and their widths.

    `stages` maps c2..c5 to their widths (pooled per-stage vectors); `spatial` names the
    stage whose map is written, flattened C-major, as float16. With `whole_image`
    (--crop none) shapes vary per row: `spatial_shape` and `valid` say each row's, and
    `scale` how its pixels relate to the original's.
    """

    embedding_dim: int | None
    embedding_dtype: str = "float32"
    with_topk: bool = True
    stages: Mapping[str, int] = field(default_factory=dict)
    spatial: str | None = None
    whole_image: bool = False
    needs_review: bool = False

    def schema(self, extra_fields: tuple[pa.Field, ...] = ()) -> pa.Schema:
        """The columns written, in COLUMNS' order; `extra_fields` (manifest columns carried
        through) last."""
        value_type = EMBEDDING_DTYPES[self.embedding_dtype]
        widths = {EMBEDDING: self.embedding_dim, **self.stages}
        fields = []
        for column in COLUMNS:
            if self._writes(column):
                kind = column.type or pa.list_(value_type, widths[column.name])
                fields.append(pa.field(column.name, kind, nullable=column.name != PATH))
        return pa.schema([*fields, *extra_fields])

    def _writes(self, column: Column) -> bool:
        spatial = self.spatial
        return {
            "always": True,
            "topk": self.with_topk,
            "review_below": self.with_topk and self.needs_review,
            "pooled": bool(self.embedding_dim),
            "stage": column.name in self.stages,
            "spatial": spatial is not None and column.name == spatial_column(spatial),
            "whole_image": self.whole_image and (column.name == SCALE or bool(spatial)),
        }[column.when]


def with_run_metadata(schema: pa.Schema, record: dict) -> pa.Schema:
    """Attach the run description as one JSON value plus flat keys for quick lookups."""
    info = {"version": __version__, **record}
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


def _fixed_lists(rows: np.ndarray | list, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """(N, D) array -> fixed_size_list<D> with nulls where `valid` is False."""
    array = np.ascontiguousarray(rows)
    n, d = array.shape
    flat = pa.array(array.reshape(n * d), type=value_type)
    return pa.FixedSizeListArray.from_arrays(flat, d, mask=pa.array(~valid))


def _list_array(lengths: np.ndarray, values: np.ndarray, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """list<...> from the valid rows' values laid end to end, null where `valid` is False."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(values, type=value_type), type=pa.list_(value_type), mask=pa.array(~valid)
    )


def _ragged_lists(rows: np.ndarray | list, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """(N, K) array -> list<...> with K items per valid row and nulls elsewhere."""
    array = np.asarray(rows)
    lengths = np.where(valid, array.shape[1], 0)
    return _list_array(lengths, array[valid].reshape(-1), valid, value_type)


def _ragged_rows(rows: np.ndarray | list, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """Per-row 1-D arrays of any lengths -> list<...>, null where `valid` is False."""
    lengths = np.array([len(r) if ok else 0 for r, ok in zip(rows, valid, strict=False)], dtype=np.int64)
    kept = [np.asarray(r) for r, ok in zip(rows, valid, strict=False) if ok]
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
    errors = [str(e) if e else None for e in batch[ERROR]]
    valid = np.array([e is None for e in errors], dtype=bool)
    columns: dict[str, pa.Array] = {
        PATH: pa.array([str(p) for p in batch[PATH]], type=pa.string()),
        WIDTH: _sizes_to_nullable(batch[WIDTH]),
        HEIGHT: _sizes_to_nullable(batch[HEIGHT]),
        ERROR: pa.array(errors, type=pa.string()),
    }
    if TOPK_IDS in schema.names:
        ids = outputs[TOPK_IDS]
        labels = np.asarray(categories, dtype=object)[ids] if len(ids) else ids
        columns[TOPK_IDS] = _ragged_lists(ids, valid, pa.int32())
        columns[TOPK_LABELS] = _ragged_lists(labels, valid, pa.string())
        columns[TOPK_PROBS] = _ragged_lists(outputs[TOPK_PROBS], valid, pa.float32())
    for kind in schema:
        values = outputs.get(kind.name)
        if kind.name in columns:
            continue
        if values is None:  # manifest columns, carried through
            columns[kind.name] = pa.array(list(batch[kind.name]), type=kind.type)
        elif pa.types.is_fixed_size_list(kind.type):
            columns[kind.name] = _fixed_lists(values, valid, kind.type.value_type)
        elif pa.types.is_list(kind.type):
            columns[kind.name] = _ragged_rows(values, valid, kind.type.value_type)
        else:
            columns[kind.name] = pa.array(np.asarray(values), type=kind.type, mask=~valid)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
