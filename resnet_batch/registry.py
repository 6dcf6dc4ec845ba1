"""The models the job accepts and their embedding widths, known without importing torch.

Builders, weights, preprocessing and class names come from torchvision (models.py); the
driver validates its arguments here while torch is still importing on another thread.
"""

from __future__ import annotations

from .errors import UsageError

EMBEDDING_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048}


def check_model(name: str) -> str:
    if name not in EMBEDDING_DIMS:
        raise UsageError(f"unknown model {name!r}; valid: {', '.join(EMBEDDING_DIMS)}")
    return name
