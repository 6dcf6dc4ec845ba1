"""The run record, written once (config/description.py) and read by everything that consumes
it: the output's record file, the part files' footers, the readers' `info`, a resume's
check and the report's runs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pyarrow as pa
import pytest

from resnet_batch.config.description import run_record, run_schema
from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.columns import PATH, read_run_metadata
from resnet_batch.core.errors import UsageError
from resnet_batch.model.weights import resolve_weights
from resnet_batch.output import features
from resnet_batch.output.record import RECORD_VERSION, RESUME_FIELDS, RunRecord
from resnet_batch.output.writer import OutputDir
from resnet_batch.review.report import saved_over_time

CFG = LabelConfig.of(inputs=("x",), output="y", model="resnet18", weights="none", features="pooled,c3", top_k=3)


def record_for(cfg: LabelConfig = CFG) -> RunRecord:
    return run_record(cfg.compute, cfg.execution.precision, resolve_weights(cfg.compute.model, "none"), ["source"])


def test_the_record_reads_back_as_written_from_the_file_and_from_every_footer(tmp_path):
    record = record_for()
    assert record.record_version == RECORD_VERSION and record.stage_dims == {"c3": 128} and record.ran is None
    finished = {"at": 2.0, "launched": 1.0, "complete": True, "phases": {"steady": 1.0}}
    schema = run_schema(CFG.compute, resolve_weights("resnet18", "none"), (), record)
    assert RunRecord.from_json(read_run_metadata(schema)) == record  # the footer's form
    out = OutputDir(str(tmp_path / "out"))
    with out.lease():
        out.begin("error", record)
        out.record_run(dataclasses.replace(record, finished=finished, runs=[finished]))
    on_disk = json.loads((tmp_path / "out" / "_resnet_batch.json").read_text())
    assert on_disk["model"] == "resnet18" and on_disk["features"] == ["pooled", "c3"] and "ran" not in on_disk
    read = OutputDir(str(tmp_path / "out")).run_record()
    assert read == dataclasses.replace(record, finished=finished, runs=[finished])
    assert RunRecord.from_json(read.to_json()) == read


def test_records_of_other_versions_read_and_damaged_ones_do_not():
    older = {"model": "resnet50", "weights": "IMAGENET1K_V2", "top_k": 5, "finished": {"launched": 1.0}}
    read = RunRecord.from_json({**older, "a_key_of_a_later_version": 1})
    assert read is not None and read.model == "resnet50" and read.all_runs() == [{"launched": 1.0}]
    assert RunRecord.from_json([1]) is None and RunRecord.from_json(None) is None


def test_a_resume_is_refused_for_each_setting_that_changes_the_rows_naming_its_flag(tmp_path):
    changes = {
        "weights": None,
        "top_k": dict(top_k=4),
        "embedding_dtype": dict(embedding_dtype="float16"),
        "features": dict(features="pooled"),
        "spatial": dict(spatial="c4"),
        "review": dict(review_below=0.5),
        "embeddings": dict(embeddings=False),
        "labels": None,
        "model": None,
        "preprocessing": dict(crop="none"),
        "extra_columns": None,
    }
    assert set(changes) == set(RESUME_FIELDS)  # every such setting is tried here
    out = OutputDir(str(tmp_path / "out"))
    with out.lease():
        out.begin("error", record_for())
        out.check_resumable(record_for())  # the same settings: resumable
        for name, change in changes.items():
            if change is None:  # a change that needs other weights or inputs: the record's own value
                changed: dict[str, Any] = {name: "other"}
                other = dataclasses.replace(record_for(), **changed)
            else:
                cfg = CFG.replace(**change)
                other = run_record(cfg.compute, "auto", resolve_weights("resnet18", "none"), ["source"])
            with pytest.raises(UsageError, match="cannot resume") as refused:
                out.check_resumable(other)
            assert RESUME_FIELDS[name] in str(refused.value), (name, str(refused.value))


def test_what_ran_is_kept_by_a_resume_that_runs_no_model():
    ran = dataclasses.replace(
        record_for(), ran=[{"device": "cpu"}], device="cpu", precision="fp32", versions={"torch": "x"}
    )
    again = record_for().keeping_what_ran(ran)
    assert (again.ran, again.device, again.precision, again.versions) == (ran.ran, "cpu", "fp32", {"torch": "x"})
    more = dataclasses.replace(record_for(), ran=[{"device": "cuda"}]).keeping_what_ran(ran)
    assert more.ran == [{"device": "cpu"}, {"device": "cuda"}]


def test_readers_and_the_report_take_the_record(tmp_path):
    out = OutputDir(str(tmp_path / "out"))
    first, second = {"launched": 1.0, "at": 2.0}, {"launched": 3.0, "at": 4.0}
    record = dataclasses.replace(record_for(), finished=second, runs=[first, second])
    with out.lease():
        out.begin("error", record)
        footer = run_schema(CFG.compute, resolve_weights("resnet18", "none"), (), record).metadata
        out.write_part(pa.table({PATH: ["/a.jpg"]}).replace_schema_metadata(footer))
    assert features.info(str(tmp_path / "out"))["stage_dims"] == {"c3": 128}
    read, _ = saved_over_time(str(tmp_path / "out"))
    assert read.all_runs() == [first, second]
