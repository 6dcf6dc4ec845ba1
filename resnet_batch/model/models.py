"""The networks: torchvision's ResNet builders, their layouts, and the passes we run through them.

Where weights come from, and the preprocessing and class names that go with them, is
weights.py; this module builds a model for resolved weights and runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision import models as tvm
from torchvision.models import WeightsEnum

from ..core.errors import UsageError, WeightsUnavailableError
from .registry import ARCHITECTURES, imagenet_categories


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    weights_enum: type[WeightsEnum]
    embedding_dim: int


MODELS: dict[str, ModelSpec] = {
    name: ModelSpec(name, getattr(tvm, name), tvm.get_model_weights(name), arch.embedding_dim)
    for name, arch in ARCHITECTURES.items()
}

RANDOM_INIT_SEED = 0


def num_classes(state: dict[str, torch.Tensor]) -> int:
    weight = state.get("fc.weight")
    return int(weight.shape[0]) if weight is not None else 1000


def build_network(model_name: str, classes: int, state: dict[str, torch.Tensor] | None) -> nn.Module:
    """`model_name` with `classes` outputs and `state` loaded (None: seeded random init), in
    eval mode, on the CPU."""
    with torch.random.fork_rng(devices=[]):
        # Random init (--weights none) must be the same in every actor of a job and across runs.
        torch.manual_seed(RANDOM_INIT_SEED)
        model = MODELS[model_name].builder(weights=None, num_classes=classes)
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.eval()


def check_release_tables(model: str, preprocess_from: str, categories: tuple[str, ...]) -> None:
    """The driver took the recipe and class names of torchvision's releases from registry.py,
    without importing torchvision; here, where it is imported anyway, they must be what this
    torchvision says (a cluster's image may hold another version than the tests ran with)."""
    member = MODELS[model].weights_enum.__members__.get(preprocess_from)
    if member is None:  # a pretrained folder's own recipe
        return
    preset = member.transforms()
    theirs = (
        preset.resize_size[0],
        preset.crop_size[0],
        tuple(preset.mean),
        tuple(preset.std),
        preset.interpolation.value,
    )
    recipe = ARCHITECTURES[model].release(member.name).recipe
    ours = (recipe.resize_size, recipe.crop_size, recipe.mean, recipe.std, recipe.interpolation)
    shipped_names = imagenet_categories()
    names_differ = categories == shipped_names and shipped_names != tuple(member.meta["categories"])
    if theirs != ours or names_differ:
        what = "its class names" if names_differ else f"its recipe {theirs}, ours {ours}"
        raise WeightsUnavailableError(
            f"torchvision {torchvision.__version__} describes {model} {member.name} otherwise than "
            f"resnet-batch's tables ({what}): install the torchvision version resnet-batch pins on every node"
        )


@cache
def _signature_of(name: str) -> tuple:
    with torch.device("meta"):
        return _signature(MODELS[name].builder().state_dict())


def _signature(state: dict[str, torch.Tensor]) -> tuple:
    """What tells the ResNets apart: blocks per stage, block type, and the first block's
    inner convolution (its width and groups: ResNeXt and wide ResNets differ only there)."""
    blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in (1, 2, 3, 4))
    inner = state.get("layer1.0.conv2.weight")
    return blocks, "layer1.0.conv3.weight" in state, tuple(inner.shape[:2]) if inner is not None else None


def identify_architecture(state: dict[str, torch.Tensor]) -> str | None:
    """The model whose layout a torchvision- or timm-style state dict has, if any of ours."""
    signature = _signature(state)
    return next((name for name in MODELS if _signature_of(name) == signature), None)


def check_fits(model: str, state: dict[str, torch.Tensor], label: str) -> int:
    """Fail early, in the driver, on weights that workers could not load; returns the class count.

    Builds the model on the meta device, so the check costs no memory for parameters.
    """
    n = num_classes(state)
    try:
        with torch.device("meta"):
            MODELS[model].builder(weights=None, num_classes=n).load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        found = identify_architecture(state)
        if found and found != model:
            raise UsageError(f"--weights {label} holds a {found} state dict; use --model {found}") from None
        first = " ".join(str(exc).strip().splitlines()[0:2])
        raise WeightsUnavailableError(f"checkpoint {label} does not fit {model}: {first}") from None
    return n


def fold_batch_norms(model: tvm.ResNet) -> tvm.ResNet:
    """Fold every eval-mode BatchNorm into the convolution before it, in place.

    Inference then skips one full read and write of every activation per BatchNorm
    (resnet18 on 2 CPU cores: ~15% more images/s); outputs equal the unfolded model's to
    fp32 rounding (tests/test_models.py).
    """
    pairs = [(model, "conv1", "bn1")]
    for block in (b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer):
        pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(block, f"bn{i}")]
        if block.downsample is not None:
            pairs.append((block.downsample, "0", "1"))
    for parent, conv, bn in pairs:
        fused = fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn))
        setattr(parent, conv, fused)
        setattr(parent, bn, nn.Identity())
    return model


def forward_stages(
    model: tvm.ResNet, x: torch.Tensor, deepest: int, logits: bool, mask: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """Stage outputs [c2, ..., c<deepest+1>] and, when asked, the pooled c5 and the logits, in one pass.

    Stops after the deepest stage needed. `mask` (N, 1, H, W), 1 on image and 0 on padding,
    makes the classifier pool over the image's cells only (masked_mean).
    """
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    stages = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4)[: 4 if logits else deepest]:
        x = layer(x)
        stages.append(x)
    if not logits:
        return stages, None, None
    pooled = pool(model, x, mask)
    return stages, pooled, model.fc(pooled)


def pool(model: tvm.ResNet, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Global average of a stage's map, over the image's cells only when `mask` says which."""
    return masked_mean(features, mask) if mask is not None else torch.flatten(model.avgpool(features), 1)


def masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average over the cells whose centre lies on the image: (N, C, h, w) -> (N, C)."""
    cells = nn.functional.interpolate(mask, size=features.shape[-2:], mode="nearest")
    return (features * cells).sum((2, 3)) / cells.sum((2, 3)).clamp_min(1)
