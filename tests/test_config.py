"""Config file + flags: same names, flags win, bad values named with the valid ones."""

from __future__ import annotations

import pytest

from resnet_batch.config.config_file import load_config_file
from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.errors import UsageError


def test_flags_win_over_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("inputs: [a, b]\noutput: out\nmodel: resnet18\ntop-k: 3\nbatch_size: 8\n")
    cfg = LabelConfig.from_sources(load_config_file(str(path)), {"model": "resnet34", "top_k": None, "inputs": None})
    assert cfg.inputs == (str(tmp_path / "a"), str(tmp_path / "b")) and cfg.output == str(tmp_path / "out")
    assert (cfg.compute.model, cfg.compute.top_k, cfg.execution.batch_size) == ("resnet34", 3, 8)


def test_config_paths_are_relative_to_the_file(tmp_path):
    """Wherever the job starts from; absolute paths, URIs, hub names and weight names stay as they are."""
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "jobs" / "job.yaml"
    path.write_text("inputs: [../images, /abs/x.jpg, 's3://b/p/*.jpg']\noutput: out\nweights: ../ckpt/r18.pth\n")
    values = load_config_file(str(path))
    assert values["inputs"] == [str(tmp_path / "images"), "/abs/x.jpg", "s3://b/p/*.jpg"]
    assert values["output"] == str(tmp_path / "jobs" / "out")
    assert values["weights"] == str(tmp_path / "ckpt" / "r18.pth")
    for weights in ("IMAGENET1K_V2", "none", "hf:org/name", "s3://b/r18.pth"):
        path.write_text(f"inputs: [x]\noutput: o\nweights: {weights}\n")
        assert load_config_file(str(path))["weights"] == weights


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"modle": "resnet18"}, "unknown config file key 'modle'"),
        ({"top_k": -1}, "--top-k must be an integer >= 0"),
        ({"top_k": 1001}, "at most 1000"),
        ({"inputs": []}, "give at least one INPUT"),
        ({"output": ""}, "--output is required"),
        ({"top_k": 0, "embeddings": False}, "nothing to compute"),
        ({"cpu_decode_share": 1.5}, r"--cpu-decode-share must be auto or a fraction in \[0, 1\], got 1.5"),
        ({"cpu_decode_share": "lots"}, r"--cpu-decode-share must be auto or a fraction in \[0, 1\], got 'lots'"),
        ({"cpu_decode_share": True}, "config key 'cpu_decode_share' must be a number or a string, got True"),
        ({"review_below": 0}, r"--review-below must be a probability in \(0, 1\], got 0"),
        ({"decode": "nvjpeg"}, "invalid --decode .nvjpeg.; valid: auto, cpu, gpu"),
        ({"io_threads": 0}, r"--io-threads must be an integer >= 1 \(leave it out for the automatic value\), got 0"),
        ({"threads_per_worker": 0}, r"--threads-per-worker must be an integer >= 1 .*got 0"),
        ({"num_workers": 0}, r"--num-workers must be an integer >= 1 .*got 0"),
        ({"batch_size": 0}, r"--batch-size must be an integer >= 1 .*got 0"),
        ({"crop": "none", "resize": 0}, r"--resize must be between 32 .* got 0"),
    ],
)
def test_bad_values(values, needle):
    base = {"inputs": ["x"], "output": "o"}
    with pytest.raises(UsageError, match=needle):
        LabelConfig.from_sources({**base, **values}, {})


def test_cpu_decode_share_is_auto_or_a_fraction():
    base = {"inputs": ["x"], "output": "o"}
    assert LabelConfig.from_sources(base, {}).execution.cpu_decode_share == "auto"
    assert (
        LabelConfig.from_sources(base, {"cpu_decode_share": "0.3"}).execution.cpu_decode_share == 0.3
    )  # from the flag
    assert LabelConfig.from_sources({**base, "cpu_decode_share": 0}, {}).execution.cpu_decode_share == 0.0
    assert (
        LabelConfig.from_sources({**base, "cpu_decode_share": "auto"}, {}).execution.cpu_decode_share == "auto"
    )  # a file


def test_config_file_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_config_file(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UsageError, match="must hold a mapping"):
        load_config_file(str(bad))


def test_each_option_is_declared_once_and_every_consumer_takes_it_from_there():
    """The records (config/options.py) against what consumes them: LabelConfig's fields and
    defaults, the parser's flags, the config file's keys and kinds, LabelConfig.of/options."""
    import dataclasses
    import typing

    from resnet_batch.cli.arguments import build_parser
    from resnet_batch.config.label_config import GROUPS
    from resnet_batch.config.options import BY_NAME, KINDS, OPTIONS

    assert len(BY_NAME) == len(OPTIONS)
    holders = {"job": LabelConfig, **GROUPS}
    fields = {
        f.name: (group, f)
        for group, holder in holders.items()
        for f in dataclasses.fields(holder)
        if f.name not in GROUPS
    }
    assert set(fields) == set(BY_NAME), set(fields) ^ set(BY_NAME)
    expected_kinds = {int: "int", float: "float", bool: "bool", str: "str"}
    for name, option in BY_NAME.items():
        group, field = fields[name]
        assert option.group == group and option.kind in KINDS, name
        if field.default is not dataclasses.MISSING:
            assert field.default == option.default, name
        hint = typing.get_type_hints(holders[group])[name]
        plain = {a for a in typing.get_args(hint) if a is not type(None)} or {hint}
        if option.kind in expected_kinds.values():
            assert {expected_kinds.get(a) for a in plain} == {option.kind}, (name, hint)
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert isinstance(commands, dict)
    label = commands["label"]
    flags = {a.dest: a for a in label._actions}
    for option in OPTIONS:
        action = flags[option.name]
        assert action.default is None and (
            option.name == "inputs" or option.flags or option.flag in action.option_strings
        )
        assert action.help == (option.help if option.name == "inputs" else option.described())
    cfg = LabelConfig.of(inputs=("a",), output="o")
    assert {k: v for k, v in cfg.options().items() if k not in ("inputs", "output")} == {
        o.name: o.default for o in OPTIONS if o.name not in ("inputs", "output")
    }
    every_key = {
        o.name: list(o.default) if o.kind == "strings" else o.default for o in OPTIONS if o.default is not None
    }
    assert LabelConfig.from_sources({**every_key, "inputs": ["a"], "output": "o"}, {}) == cfg
