"""Reading a job's features back: numpy or torch arrays of the right shape, streamed.

    from resnet_batch.output import features
    for batch in features.read("out/", columns=["embedding", "spatial_c5"]):
        batch["path"]          # list of str
        batch["embedding"]     # (n, 2048) float32
        batch["spatial_c5"]    # (n, 2048, 7, 7) float16, or a list of (C, H, W) with --crop none

`open_output` and `batches` are the one way the report, exports and neighbours read an
output too. Part files are read one row group at a time (a part file is at most 256 MB), from local
disk or any fsspec URI the job can write to, so memory stays bounded whatever the output's
size. Only pyarrow and numpy are needed; torch only for `as_torch=True`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ..core.columns import ERROR, PATH, SCALE, SPATIAL_SHAPE, read_run_metadata
from ..core.errors import UsageError
from .lease_record import lease_state
from .record import RunRecord
from .repair import untrusted_parts
from .writer import OutputDir

log = logging.getLogger(__name__)

ALWAYS = (PATH,)


def open_output(output: str) -> tuple[pads.Dataset, RunRecord]:
    """A job output's part files as one dataset, and its run description; one-line errors."""
    out = OutputDir(output)
    if not out.fs.exists(out.path):
        raise UsageError(f"{output} does not exist")
    files = out.part_files()
    if not files:
        raise UsageError(f"{output} is not a resnet-batch output: it holds no resnet-batch part files (part-*.parquet)")
    files = _readable(out, output, files)
    dataset = pads.dataset(files, filesystem=out.fs, format="parquet")
    record = RunRecord.from_json(read_run_metadata(dataset.schema)) or out.run_record()
    _warn_if_partial(out, output)
    return dataset, record or RunRecord()


def _readable(out: OutputDir, output: str, files: list[str]) -> list[str]:
    """The part files to read: less the damaged (a footer cut short) and the copies of
    another (counted twice otherwise), each named in a warning."""
    damaged, copies = untrusted_parts(out, files)
    if damaged:
        log.warning(
            "%d part files of %s are damaged (e.g. %s: its footer cannot be read, as after a write cut short) and "
            "are left out; `resnet-batch label ... --mode resume` sets them aside and labels their rows again",
            len(damaged),
            output,
            damaged[0].rsplit("/", 1)[-1],
        )
    if copies:
        log.warning(
            "%s holds copies of its part files (%s: named for other paths than those it holds) and they are left "
            "out; move them out of the output",
            output,
            ", ".join(c.rsplit("/", 1)[-1] for c in copies[:3]),
        )
    files = [f for f in files if f not in damaged and f not in copies]
    if not files:
        raise UsageError(f"{output} holds no readable part file")
    return files


def _warn_if_partial(out: OutputDir, output: str) -> None:
    """Say so where what is read is not a finished run's whole output."""
    lease = lease_state(out.fs, out.path)
    resume = "finish it with the same `resnet-batch label` command and --mode resume"
    if lease and lease.startswith("held"):
        log.warning("a job is writing %s now (%s): this covers the rows it has saved so far", output, lease[6:])
    elif lease:
        log.warning(
            "the job that wrote %s died before it finished (%s): some inputs may have no row yet; %s",
            output,
            lease[7:],
            resume,
        )
    else:
        record = out.run_record()
        finished = record.finished if record else None
        if record is not None and not isinstance(finished, dict):
            log.warning(
                "the job that wrote %s was stopped before it finished: some inputs may have no row yet; %s",
                output,
                resume,
            )
        elif finished and not finished.get("complete", True):
            log.warning(
                "the job that wrote %s ended INCOMPLETE (%s rows for %s inputs): see its summary; %s",
                output,
                finished.get("rows"),
                finished.get("inputs"),
                resume,
            )
    misnamed = out.misnamed_parts()
    if misnamed:
        log.warning(
            "%s holds part files not named as resnet-batch names them (e.g. %s): copies would count their "
            "rows twice; move them out",
            output,
            misnamed[0],
        )


def batches(
    dataset: pads.Dataset,
    columns: list[str],
    progress: Callable[[int, int], None] | None = None,
    batch_rows: int = 65536,
) -> Iterator[pa.RecordBatch]:
    """Row batches of the wanted columns (those the output has), one row group in flight;
    `progress(rows done, rows in all)` after each."""
    total = dataset.count_rows() if progress else 0
    present = [c for c in columns if c in dataset.schema.names]
    done = 0
    for batch in dataset.to_batches(columns=present, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1):
        done += batch.num_rows
        if progress:
            progress(done, total)
        yield batch


def info(output: str) -> dict:
    """The run's description: model, weights, preprocessing, features, spatial map layout."""
    return open_output(output)[1].to_json()


def read(
    output: str,
    columns: list[str] | None = None,
    *,
    batch_rows: int = 1024,
    skip_errors: bool = True,
    as_torch: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[dict]:
    """Batches of at most `batch_rows` rows as {column: array}; `path` always comes along.

    `columns` default to every feature column the output has. Rows with an error are left
    out unless `skip_errors=False` (their features are then NaN, their spatial maps None).
    """
    dataset, run = open_output(output)
    names = dataset.schema.names
    wanted = list(columns) if columns is not None else [n for n in names if _is_feature(dataset.schema.field(n))]
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise UsageError(f"{output} has no column {', '.join(unknown)}; it has: {', '.join(names)}")
    spatial = [c for c in wanted if c.startswith("spatial_c")]
    spatial_shape = (run.spatial or {}).get("shape") if spatial else None
    read_columns = list(
        dict.fromkeys([*ALWAYS, *wanted, ERROR] + ([SPATIAL_SHAPE] if spatial and spatial_shape is None else []))
    )
    for batch in batches(dataset, read_columns, progress, batch_rows):
        if skip_errors:
            batch = batch.filter(pc.is_null(batch.column(ERROR)))
        if batch.num_rows:
            yield _arrays(batch, [*ALWAYS, *wanted], spatial_shape, as_torch)


def _is_feature(field: pa.Field) -> bool:
    return pa.types.is_fixed_size_list(field.type) or field.name.startswith("spatial_c") or field.name == SCALE


def _arrays(batch: pa.RecordBatch, columns: list[str], spatial_shape: list[int] | None, as_torch: bool) -> dict:
    result = {}
    for name in dict.fromkeys(columns):
        column = batch.column(name)
        if name.startswith("spatial_c"):
            shapes = [spatial_shape] * batch.num_rows if spatial_shape else batch.column(SPATIAL_SHAPE).to_pylist()
            value = _maps(column, shapes, fixed=spatial_shape is not None)
        elif pa.types.is_fixed_size_list(column.type):
            value = _matrix(column)
        elif pa.types.is_list(column.type) or pa.types.is_string(column.type):
            value = column.to_pylist()
        else:
            value = column.to_numpy(zero_copy_only=False)
        result[name] = _torch(value) if as_torch else value
    return result


def _matrix(column: pa.FixedSizeListArray) -> np.ndarray:
    """fixed_size_list<D> -> (n, D); rows with an error are NaN."""
    width = column.type.list_size
    dtype = column.type.value_type.to_pandas_dtype()
    values = np.full((len(column), width), np.nan if np.issubdtype(dtype, np.floating) else 0, dtype=dtype)
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    values[valid] = column.filter(pc.is_valid(column)).flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    return values


def _maps(column: pa.ListArray, shapes: list, fixed: bool):
    """list<float16> -> (n, C, H, W) when every row has one shape, else a list of (C, H, W)."""
    maps = []
    for i, shape in enumerate(shapes):
        row = column[i]
        maps.append(None if not row.is_valid else row.values.to_numpy(zero_copy_only=False).reshape(shape))
    present = [m for m in maps if m is not None]
    return np.stack(present) if fixed and len(present) == len(maps) else maps


def _torch(value: object):
    import torch

    # Arrow's zero-copy arrays are read-only, which torch warns about: those are copied.
    if isinstance(value, np.ndarray) and value.dtype != object:
        return torch.from_numpy(np.require(value, requirements="W"))
    if isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
        return [torch.from_numpy(np.require(v, requirements="W")) for v in value]
    return value
