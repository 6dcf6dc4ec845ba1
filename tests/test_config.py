"""Config file + flags: same names, flags win, bad values named with the valid ones."""

from __future__ import annotations

import pytest

from resnet_batch.config import LabelConfig, load_config_file
from resnet_batch.errors import UsageError


def test_flags_win_over_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("inputs: [a, b]\noutput: out\nmodel: resnet18\ntop-k: 3\nbatch_size: 8\n")
    cfg = LabelConfig.from_sources(load_config_file(str(path)), {"model": "resnet34", "top_k": None, "inputs": None})
    assert (cfg.inputs, cfg.output, cfg.model, cfg.top_k, cfg.batch_size) == (("a", "b"), "out", "resnet34", 3, 8)


@pytest.mark.parametrize("values, needle", [
    ({"modle": "resnet18"}, "unknown config file key 'modle'"),
    ({"top_k": -1}, "--top-k must be an integer >= 0"),
    ({"top_k": 1001}, "at most 1000"),
    ({"inputs": []}, "give at least one INPUT"),
    ({"output": ""}, "--output is required"),
    ({"top_k": 0, "embeddings": False}, "nothing to compute"),
])
def test_bad_values(values, needle):
    base = {"inputs": ["x"], "output": "o"}
    with pytest.raises(UsageError, match=needle):
        LabelConfig.from_sources({**base, **values}, {})


def test_config_file_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_config_file(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UsageError, match="must hold a mapping"):
        load_config_file(str(bad))
