"""The models, weights names and feature stages the job accepts, known without importing torch.

Builders, weights, preprocessing and class names come from torchvision (models.py,
weights.py); the driver validates its arguments here while torch is still importing on
another thread.
"""

from __future__ import annotations

from .errors import UsageError
from .storage import filesystem, is_local

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
# torchvision's pretrained weights per model (its enums, which tests check this against).
V1, V2 = "IMAGENET1K_V1", "IMAGENET1K_V2"
TORCHVISION_WEIGHTS = {
    "resnet18": (V1,), "resnet34": (V1,), "resnet50": (V1, V2), "resnet101": (V1, V2), "resnet152": (V1, V2),
    "resnext50_32x4d": (V1, V2), "resnext101_32x8d": (V1, V2), "resnext101_64x4d": (V1,),
    "wide_resnet50_2": (V1, V2), "wide_resnet101_2": (V1, V2),
}
NO_WEIGHTS = "none"
HF_PREFIX = "hf:"
CHECKPOINT_FORMS = "a .pt/.pth/.safetensors file, a save_pretrained folder or hf:ORG/NAME, local or s3://, gs://, ..."

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


def weights_names(model: str) -> list[str]:
    return ["DEFAULT", *TORCHVISION_WEIGHTS[model]]


def valid_weights(model: str) -> str:
    """What --weights takes for `model`, for error messages."""
    return f"valid: {', '.join([*weights_names(model), NO_WEIGHTS, 'PATH-or-URI'])} ({CHECKPOINT_FORMS})"


def looks_like_weights_name(value: str) -> bool:
    """IMAGENET1K_V2, DEFAULT: what --weights means as a torchvision name rather than a path."""
    return value.replace("_", "").isalnum() and value.upper() == value


def check_weights_name(model: str, name: str) -> str:
    if name not in weights_names(model):
        raise UsageError(f"unknown weights {name!r} for {model}; {valid_weights(model)}")
    return name


def check_weights_argument(model: str, weights: str) -> None:
    """Refuses, in a moment, what resolving the weights would refuse only once torch is imported:
    an unknown torchvision weights name, a local checkpoint path that does not exist."""
    if weights.lower() == NO_WEIGHTS or weights.startswith(HF_PREFIX):
        return
    if looks_like_weights_name(weights):
        check_weights_name(model, weights)
    elif is_local(weights) and not _exists(weights):
        raise UsageError(f"checkpoint not found: {weights}; --weights {valid_weights(model)}")


def _exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def column_of(feature: str) -> str:
    """The output column of a --features value: `pooled` is written as `embedding`."""
    return "embedding" if feature == POOLED else feature


def stage_width(model: str, stage: str) -> int:
    return STAGE_WIDTHS[model][STAGES.index(stage)]


def feature_width(model: str, feature: str) -> int:
    """Values in a --features value's vector (`pooled` is c5's average)."""
    return EMBEDDING_DIMS[model] if feature == POOLED else stage_width(model, feature)
