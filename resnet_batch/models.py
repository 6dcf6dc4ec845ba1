"""Model registry: ResNet builders, their weights, preprocessing and class names.

Preprocessing and labels always come from torchvision's weights metadata (`transforms()`
and `meta["categories"]`), never from constants of our own.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision import models as tvm
from torchvision.models import WeightsEnum

from . import hf
from .errors import UsageError, WeightsUnavailableError, one_line
from .preprocessing import Preprocessing
from .registry import EMBEDDING_DIMS, check_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    weights_enum: type[WeightsEnum]
    embedding_dim: int


MODELS: dict[str, ModelSpec] = {
    name: ModelSpec(name, getattr(tvm, name), tvm.get_model_weights(name), dim) for name, dim in EMBEDDING_DIMS.items()
}

NO_WEIGHTS = "none"
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class ResolvedWeights:
    """Everything a worker needs to rebuild the model, cheap to pickle."""

    model: str
    weights: str  # what the user asked for, normalised: enum name, "none" or a URI
    source: str  # "torchvision" | "checkpoint" | "hf" | "none"
    preprocessing: Preprocessing
    preprocess_from: str  # the torchvision weights whose transforms() we follow
    categories: tuple[str, ...]

    @property
    def embedding_dim(self) -> int:
        return MODELS[self.model].embedding_dim


def model_spec(name: str) -> ModelSpec:
    return MODELS[check_model(name)]


def weights_names(name: str) -> list[str]:
    return ["DEFAULT", *(w.name for w in model_spec(name).weights_enum)]


CHECKPOINT_FORMS = "a .pt/.pth/.safetensors file, a save_pretrained folder or hf:ORG/NAME, local or s3://, gs://, ..."


def valid_weights(model: str) -> str:
    """What --weights takes for `model`, for error messages."""
    return f"valid: {', '.join([*weights_names(model), NO_WEIGHTS, 'PATH-or-URI'])} ({CHECKPOINT_FORMS})"


def _torchvision_weights(spec: ModelSpec, name: str) -> WeightsEnum:
    if name == "DEFAULT":
        return spec.weights_enum.DEFAULT
    try:
        return spec.weights_enum[name]
    except KeyError:
        raise UsageError(f"unknown weights {name!r} for {spec.name}; {valid_weights(spec.name)}") from None


def _looks_like_enum_name(value: str) -> bool:
    return value.replace("_", "").isalnum() and value.upper() == value


def resolve_weights(model: str, weights: str, preprocess_from: str | None = None) -> ResolvedWeights:
    """Decide where the weights come from and which preprocessing goes with them.

    For random init and checkpoints the preprocessing and class names follow
    `preprocess_from` (default: the model's IMAGENET1K_V1 weights, the classic
    256/224 recipe most ResNet checkpoints were trained with).
    """
    spec = model_spec(model)
    if weights == NO_WEIGHTS or weights.lower() == NO_WEIGHTS:
        source, label = "none", NO_WEIGHTS
    elif weights == "DEFAULT" or _looks_like_enum_name(weights):
        tv = _torchvision_weights(spec, weights)
        if preprocess_from is not None and preprocess_from != tv.name:
            raise UsageError("--preprocess applies only to --weights none or a checkpoint")
        return ResolvedWeights(
            model=model,
            weights=tv.name,
            source="torchvision",
            preprocessing=Preprocessing.from_weights(tv),
            preprocess_from=tv.name,
            categories=tuple(tv.meta["categories"]),
        )
    else:
        hf_folder = hf.checkpoint_dir(weights)
        if hf_folder is not None:
            return _resolve_hf(spec, weights, hf_folder, preprocess_from)
        source, label = "checkpoint", weights
    reference = _torchvision_weights(spec, preprocess_from or "IMAGENET1K_V1")
    return ResolvedWeights(
        model=model,
        weights=label,
        source=source,
        preprocessing=Preprocessing.from_weights(reference),
        preprocess_from=reference.name,
        categories=tuple(reference.meta["categories"]),
    )


def _resolve_hf(spec: ModelSpec, weights: str, folder, preprocess_from: str | None) -> ResolvedWeights:
    """Preprocessing and labels from the checkpoint's own config and image-processor files."""
    config = hf.read_config(folder)
    arch = hf.architecture(config)
    if arch != spec.name:
        raise UsageError(f"--weights {weights} holds a {arch} checkpoint; use --model {arch}")
    reference = _torchvision_weights(spec, preprocess_from or "IMAGENET1K_V1")
    values = hf.preprocessing_values(folder)
    prep = Preprocessing(**values) if values and not preprocess_from else Preprocessing.from_weights(reference)
    return ResolvedWeights(
        model=spec.name,
        weights=weights,
        source="hf",
        preprocessing=prep,
        preprocess_from="preprocessor_config.json" if values and not preprocess_from else reference.name,
        categories=hf.categories(config) or tuple(reference.meta["categories"]),
    )


def _download_torchvision(resolved: ResolvedWeights) -> dict[str, torch.Tensor]:
    tv = _torchvision_weights(MODELS[resolved.model], resolved.weights)
    try:
        return tv.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, HTTPError, socket errors, hash mismatch
        raise WeightsUnavailableError(
            f"cannot download {resolved.model} {tv.name} weights from {tv.url} "
            f"({type(exc).__name__}: {one_line(exc, 120)}); offline, use --weights none for a trial run "
            f"(random weights), pass --weights PATH-or-URI to a checkpoint, or put {tv.url.rsplit('/', 1)[-1]} "
            "in torch's hub cache ($TORCH_HOME/hub/checkpoints/, default ~/.cache/torch/hub/checkpoints/)"
        ) from None


class CheckpointNotFound(WeightsUnavailableError):
    pass


def read_checkpoint(uri: str) -> dict[str, torch.Tensor]:
    """Load a state_dict from a local path or fsspec URI without executing pickled code."""
    from .storage import read_bytes_or_raise

    try:
        data = read_bytes_or_raise(uri)
    except FileNotFoundError:
        raise CheckpointNotFound(f"checkpoint not found: {uri}") from None
    except OSError as exc:
        raise WeightsUnavailableError(f"cannot read checkpoint {uri}: {exc}") from None
    try:
        if uri.endswith(".safetensors"):
            from safetensors.torch import load as load_safetensors

            state = load_safetensors(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"cannot load checkpoint {uri} as a state_dict ({type(exc).__name__}: {exc}); "
            "expected a .pt/.pth state_dict saved with torch.save or a .safetensors file"
        ) from None
    return _unwrap_state_dict(state, uri)


def _unwrap_state_dict(state: object, uri: str) -> dict[str, torch.Tensor]:
    # Training scripts often save {"state_dict": ...} or {"model": ...}, and DDP adds "module.".
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"checkpoint {uri} does not hold a state_dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return hf.convert_state_dict(state) if hf.is_hf_state_dict(state) else state


def _num_classes(state: dict[str, torch.Tensor]) -> int:
    weight = state.get("fc.weight")
    return int(weight.shape[0]) if weight is not None else 1000


def load_state_dict(resolved: ResolvedWeights) -> dict[str, torch.Tensor] | None:
    if resolved.source == "torchvision":
        return _download_torchvision(resolved)
    if resolved.source == "checkpoint":
        try:
            return read_checkpoint(resolved.weights)
        except CheckpointNotFound as exc:  # often a misspelt name rather than a path
            raise WeightsUnavailableError(f"{exc}; --weights {valid_weights(resolved.model)}") from None
    if resolved.source == "hf":
        return hf.load_hf_weights(resolved.weights)
    return None


def build_model(
    resolved: ResolvedWeights, state: dict[str, torch.Tensor] | None = None, assign: bool = False
) -> nn.Module:
    """Build the model with its weights loaded, in eval mode, on the CPU."""
    if state is None:
        state = load_state_dict(resolved)
    num_classes = _num_classes(state) if state is not None else len(resolved.categories)
    with torch.random.fork_rng(devices=[]):
        # Random init (--weights none) must be the same in every actor of a job and across runs.
        torch.manual_seed(RANDOM_INIT_SEED)
        model = MODELS[resolved.model].builder(weights=None, num_classes=num_classes)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True, assign=assign)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0:2]
            raise WeightsUnavailableError(
                f"checkpoint {resolved.weights} does not fit {resolved.model}: {' '.join(first)}"
            ) from None
    return model.eval()


def check_weights(resolved: ResolvedWeights) -> list[str]:
    """Fail early, in the driver, on weights that workers could not load.

    Builds the model on the meta device so the check costs no memory for parameters.
    Returns the class names that the loaded weights imply.
    """
    state = load_state_dict(resolved)
    if state is None:
        return list(resolved.categories)
    with torch.device("meta"):
        build_model(resolved, state, assign=True)
    n = _num_classes(state)
    return list(resolved.categories) if n == len(resolved.categories) else [str(i) for i in range(n)]


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


def forward_features(model: tvm.ResNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass through the network: (pooled embedding, logits)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    pooled = torch.flatten(model.avgpool(x), 1)
    return pooled, model.fc(pooled)


def describe_models() -> list[dict]:
    return [
        {
            "model": spec.name,
            "weights": [*weights_names(spec.name), NO_WEIGHTS, "PATH-or-URI"],
            "default": spec.weights_enum.DEFAULT.name,
            "embedding_dim": spec.embedding_dim,
        }
        for spec in MODELS.values()
    ]
