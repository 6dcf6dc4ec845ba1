"""The models and feature stages the job accepts, known without importing torch.

Builders, weights, preprocessing and class names come from torchvision (models.py,
weights.py); the driver validates its arguments here while torch is still importing on
another thread.
"""

from __future__ import annotations

from .errors import UsageError

BASIC_WIDTHS = (64, 128, 256, 512)  # output channels of layer1..layer4
BOTTLENECK_WIDTHS = (256, 512, 1024, 2048)  # ResNeXt and wide ResNets widen inside blocks only
STAGE_WIDTHS = {
    "resnet18": BASIC_WIDTHS,
    "resnet34": BASIC_WIDTHS,
    "resnet50": BOTTLENECK_WIDTHS,
    "resnet101": BOTTLENECK_WIDTHS,
    "resnet152": BOTTLENECK_WIDTHS,
    "resnext50_32x4d": BOTTLENECK_WIDTHS,
    "resnext101_32x8d": BOTTLENECK_WIDTHS,
    "resnext101_64x4d": BOTTLENECK_WIDTHS,
    "wide_resnet50_2": BOTTLENECK_WIDTHS,
    "wide_resnet101_2": BOTTLENECK_WIDTHS,
}
EMBEDDING_DIMS = {name: widths[-1] for name, widths in STAGE_WIDTHS.items()}

# Backbone stages by their detection names: cN is layer(N-1)'s output, at stride 2**N.
STAGES = ("c2", "c3", "c4", "c5")
STAGE_STRIDES = {stage: 2 ** int(stage[1]) for stage in STAGES}
POOLED = "pooled"  # the classifier's input: c5 average-pooled, written as `embedding`
FEATURES = (POOLED, *STAGES)
SPATIAL_STAGES = ("c4", "c5")


def check_model(name: str) -> str:
    if name not in STAGE_WIDTHS:
        raise UsageError(f"unknown model {name!r}; valid: {', '.join(STAGE_WIDTHS)}")
    return name


def column_of(feature: str) -> str:
    """The output column of a --features value: `pooled` is written as `embedding`."""
    return "embedding" if feature == POOLED else feature


def stage_width(model: str, stage: str) -> int:
    return STAGE_WIDTHS[model][STAGES.index(stage)]


def feature_width(model: str, feature: str) -> int:
    """Values in a --features value's vector (`pooled` is c5's average)."""
    return EMBEDDING_DIMS[model] if feature == POOLED else stage_width(model, feature)
