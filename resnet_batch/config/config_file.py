"""A job's YAML config file: read, its relative paths made relative to the file, and each
value checked as its option's kind (options.py)."""

from __future__ import annotations

import os
import posixpath

from ..core.errors import UsageError, one_line

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def typed(key: str, value: object, kind: str) -> object:
    """A config file's value as the option's kind (options.KINDS), or a one-line refusal
    (YAML gives any type)."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
            return value.strip().lower() in TRUE  # a quoted "false" is false
        raise UsageError(f"config key {key!r} must be true or false, got {value!r}")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int":
        if number and isinstance(value, int):
            return value
        raise UsageError(f"config key {key!r} must be an integer, got {value!r}")
    if kind == "float":
        if number:
            return value
        raise UsageError(f"config key {key!r} must be a number, got {value!r}")
    if kind == "number_or_word":  # --cpu-decode-share: a fraction or auto
        if number or isinstance(value, str):
            return value
        raise UsageError(f"config key {key!r} must be a number or a string, got {value!r}")
    if kind == "strings":  # inputs, features: one string or a list of strings
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value
        raise UsageError(f"config key {key!r} must be a string or a list of strings, got {value!r}")
    if isinstance(value, str):
        return value
    raise UsageError(f"config key {key!r} must be a string, got {value!r}")


def load_config_file(path: str) -> dict:
    import yaml

    from ..core.storage import read_bytes_or_raise

    try:
        values = yaml.safe_load(read_bytes_or_raise(path)) or {}
    except FileNotFoundError:
        raise UsageError(f"config file {path} not found") from None
    except OSError as exc:  # a folder, no permission, a FIFO
        raise UsageError(f"cannot read config file {path}: {one_line(exc)}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise UsageError(f"config file {path} must hold a mapping of option names to values")
    return _paths_relative_to(posixpath.dirname(path) or ".", values)


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def _paths_relative_to(base: str, values: dict) -> dict:
    """A config file's relative paths name files beside it, wherever the job is started from."""

    def resolve(value: object):
        if isinstance(value, str) and value.startswith("~"):
            return os.path.expanduser(value)
        if not isinstance(value, str) or "://" in value or value.startswith(("/", "hf:")):
            return value
        return posixpath.normpath(posixpath.join(base, value))

    values = dict(values)
    for key in ("inputs", "output"):
        if isinstance(values.get(key), list):
            values[key] = [resolve(v) for v in values[key]]
        elif key in values:
            values[key] = resolve(values[key])
    if isinstance(values.get("labels"), str):
        values["labels"] = resolve(values["labels"])
    weights = values.get("weights")
    if isinstance(weights, str) and ("/" in weights or weights.endswith(CHECKPOINT_SUFFIXES)):
        values["weights"] = resolve(weights)
    return values
