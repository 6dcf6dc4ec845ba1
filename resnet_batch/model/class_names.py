"""Class names as checkpoints, --labels files and pretrained folders give them: one reading,
one set of refusals (`where` names the source in them)."""

from __future__ import annotations

import json

from ..core.errors import UsageError


def _name(value: object, at: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(
            f"{where}: class {at} has no name (got {json.dumps(value)}); every class needs a non-empty string"
        )
    return value


def class_names(value: object, where: str) -> tuple[str, ...]:
    """Class names from a list, or a dict of class index -> name whose keys are 0..N-1."""
    if isinstance(value, (list, tuple)):
        return tuple(_name(v, i, where) for i, v in enumerate(value))
    if isinstance(value, dict):
        try:
            ids = [int(k) for k in value]
        except (TypeError, ValueError):
            raise UsageError(f"{where}: class ids must be integers, got {list(value)[:3]}") from None
        by_index = {i: _name(v, k, where) for i, (k, v) in zip(ids, value.items(), strict=False)}
        if sorted(by_index) != list(range(len(by_index))):
            raise UsageError(f"{where}: class ids must be 0..{len(by_index) - 1} without gaps")
        return tuple(by_index[i] for i in range(len(by_index)))
    raise UsageError(f"{where}: expected a list of names or a mapping of class id to name")
