"""Checkpoint files and class-name files, read as untrusted: tensors only
(`weights_only=True`, or safetensors), class names checked against the head they label.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.errors import UsageError, WeightsUnavailableError, one_line
from . import hf
from .class_names import class_names

if TYPE_CHECKING:
    import torch


class CheckpointNotFound(WeightsUnavailableError):
    pass


@dataclass(frozen=True)
class Loaded:
    state: dict[str, torch.Tensor] | None  # None: random init, or not fetched
    names: tuple[str, ...] | None = None  # class names that ship with the weights


def read_state_bytes(data: bytes, name: str) -> object:
    """A checkpoint's bytes -> its object, without executing pickled code."""
    if name.endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        return load_safetensors(data)
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def read_checkpoint(uri: str) -> Loaded:
    """A state dict (and any class names beside it) from a local path or fsspec URI."""
    from ..core.storage import read_bytes_or_raise

    try:
        data = read_bytes_or_raise(uri)
    except FileNotFoundError:
        raise CheckpointNotFound(f"checkpoint not found: {uri}") from None
    except OSError as exc:
        raise WeightsUnavailableError(f"cannot read checkpoint {uri}: {exc}") from None
    try:
        obj = read_state_bytes(data, uri)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"cannot load checkpoint {uri} as a state_dict ({type(exc).__name__}: {one_line(exc, 200)}); "
            "expected a .pt/.pth state_dict saved with torch.save or a .safetensors file"
        ) from None
    return _unwrap(obj, uri)


CLASS_NAME_KEYS = ("classes", "class_names", "id2label", "label_names")


def _unwrap(obj: object, uri: str) -> Loaded:
    # Training scripts often save {"state_dict": ..., "classes": [...]} or {"model": ...};
    # DDP adds "module."; Hugging Face's layout has keys of its own.
    names = None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            names = next((class_names(obj[k], f"{uri} {k}") for k in CLASS_NAME_KEYS if obj.get(k)), None)
            obj = obj[key]
    import torch

    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailableError(f"checkpoint {uri} does not hold a state_dict of tensors")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return Loaded(hf.convert_state_dict(state) if hf.is_hf_state_dict(state) else state, names)


def read_labels(uri: str) -> tuple[str, ...]:
    """--labels FILE: one name a line, or JSON (a list, or {id: name})."""
    from ..core.storage import read_bytes_or_raise

    try:
        text = read_bytes_or_raise(uri).decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"--labels file {uri} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --labels file {uri}: {one_line(exc)}") from None
    if text.lstrip().startswith(("[", "{")):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--labels file {uri} is not valid JSON: {one_line(exc)}") from None
        names = class_names(parsed, f"--labels {uri}")
    else:
        names = tuple(line.strip() for line in text.strip("\n").splitlines())
    if not names or not all(names):
        raise UsageError(f"--labels file {uri} must name every class, one per line (no empty lines)")
    return names
