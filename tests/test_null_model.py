"""--model none: the pipeline without a network, writing the columns a resnet50 run writes."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

from resnet_batch.config.description import run_record, run_schema
from resnet_batch.config.label_config import LabelConfig
from resnet_batch.config.plan import Cluster, make_plan
from resnet_batch.core.columns import read_run_metadata
from resnet_batch.model.weights import resolve_weights
from resnet_batch.run.job import run_label

from .conftest import write_jpegs


def test_null_model_rows_have_resnet50s_columns(ray_local, tmp_path):
    folder = tmp_path / "in"
    write_jpegs(folder, 5, seed=21)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cfg = LabelConfig.of(
        inputs=(str(folder),),
        output=str(tmp_path / "out"),
        model="none",
        features=("pooled", "c4"),
        spatial="c5",
        review_below=0.5,
        precision="fp32",
        batch_size=4,
    )
    summary = run_label(cfg)
    assert summary.complete and summary.processed == 6 and summary.errors == {"decode_error": 1}
    table = pq.read_table(tmp_path / "out")
    # The schema a real resnet50 run with the same options writes, column for column.
    real = cfg.replace(model="resnet50", weights="none").compute
    resolved = resolve_weights("resnet50", "none")
    want = run_schema(real, resolved, (), run_record(real, "fp32", resolved, []))
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in want]
    ok = table.filter(table.column("error").is_null()).to_pylist()
    assert len(ok) == 5
    for row in ok:
        assert row["topk_ids"] == [0, 1, 2, 3, 4] and row["topk_labels"][0] == "tench"
        np.testing.assert_allclose(row["topk_probs"], [1 / 1000] * 5)
        assert math.isclose(row["entropy"], math.log(1000), rel_tol=1e-6) and row["margin"] == 0
        assert row["needs_review"] is True and not any(row["embedding"]) and len(row["embedding"]) == 2048
        assert len(row["spatial_c5"]) == 2048 * 7 * 7 and not any(row["spatial_c5"])
        assert row["width"] == 320
    meta = read_run_metadata(table.schema)
    assert meta is not None
    assert meta["model"] == "none" and meta["ran"] == [
        {"device": "cpu", "precision": "none", "torch": "none", "torchvision": "none", "gpu": None}
    ]


def test_null_model_never_takes_a_gpu():
    cfg = LabelConfig.of(inputs=("x",), output="y", model="none")
    plan = make_plan(
        cfg, resolve_weights("none", "DEFAULT"), Cluster(gpus=4, cpu_nodes=1, cpus_per_node=8, cpu_bf16=False)
    )
    assert plan.gpus_per_actor == 0 and plan.inference.device == "cpu" and not plan.decode_on_device
    assert plan.cpus_per_actor == 0  # it computes nothing: the cores are left to decoding


def test_null_model_imports_no_torch():
    code = (
        "import sys, numpy as np; from resnet_batch.model.weights import resolve_weights; "
        "from resnet_batch.model.settings import InferenceSettings; "
        "from resnet_batch.model.actor import PredictorActor; "
        "from resnet_batch.core.columns import OutputColumns; "
        "s = InferenceSettings(weights=resolve_weights('none', 'DEFAULT'), top_k=2); "
        "t = PredictorActor(s, OutputColumns(2048).schema())({'path': np.array(['a'], object), 'width': np.array([1]), "
        "'height': np.array([1]), 'error': np.array(['decode_error: x'], object)}); "
        "assert t.num_rows == 1; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


def test_the_null_models_batch_time_is_read_from_its_variable(monkeypatch):
    import pytest

    from resnet_batch.model.null import BATCH_SECONDS_VARIABLE, batch_seconds

    monkeypatch.delenv(BATCH_SECONDS_VARIABLE, raising=False)
    assert batch_seconds() == 0
    for value, seconds in (("0.25", 0.25), (" 2 ", 2.0), ("", 0.0)):
        monkeypatch.setenv(BATCH_SECONDS_VARIABLE, value)
        assert batch_seconds() == seconds
    for value in ("fast", "-1", "inf", "nan"):
        monkeypatch.setenv(BATCH_SECONDS_VARIABLE, value)
        with pytest.raises(ValueError, match=f"{BATCH_SECONDS_VARIABLE} must be a number of seconds"):
            batch_seconds()
