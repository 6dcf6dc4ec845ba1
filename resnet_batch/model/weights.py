"""Where a model's weights come from, and what comes with them: preprocessing and class names.

One object per kind of source, each answering the same two questions: which preprocessing
goes with these weights (`recipe`), and what the weights are (`load`: the state dict and
the class names shipped with it):
- `RandomInit`: `--weights none`, seeded, for trials and tests;
- `TorchvisionWeights`: DEFAULT, IMAGENET1K_V1, ... through torchvision's weights API;
- `CheckpointFile`: a .pt/.pth/.bin/.safetensors state dict, local or fsspec URI, in
  torchvision's (= timm's) or Hugging Face's key layout, maybe with its class names beside it;
- `PretrainedFolder`: a Hugging Face `save_pretrained` folder or `hf:ORG/NAME`, written by
  transformers or by timm (formats in hf.py).
`resolve_weights` picks the source and resolves it in one step, in the driver; workers load
the state dict (`load`) from the picklable `ResolvedWeights` it returns. The driver imports
torch only to read a checkpoint: torchvision's releases and random init are described by
registry.py's tables, and a release already in torch's hub cache needs no check there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UsageError, WeightsUnavailableError, one_line
from ..data.preprocessing import Preprocessing
from . import hf
from .checkpoints import CheckpointNotFound, Loaded, read_checkpoint, read_labels
from .registry import (
    NO_WEIGHTS,
    POOLED,
    architecture,
    check_model,
    choose_weights,
    feature_width,
    imagenet_categories,
    valid_weights,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


CLASSIC_RECIPE = "IMAGENET1K_V1"  # the 256/224 recipe most ResNet checkpoints were trained with


def _release_recipe(model: str, name: str) -> Preprocessing:
    """The preprocessing of torchvision's release `name` (its weights' transforms())."""
    return architecture(model).release(name).recipe


def _reference_recipe(model: str, preprocess: str | None) -> tuple[Preprocessing, str]:
    release = architecture(model).release(preprocess or CLASSIC_RECIPE)
    return release.recipe, release.name


def hub_checkpoint(url: str) -> Path:
    """Where torch.hub keeps a download (hub.get_dir()/checkpoints), found without importing torch."""
    home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RandomInit:
    kind = "none"
    label = NO_WEIGHTS

    def recipe(self, model: str, preprocess: str | None) -> tuple[Preprocessing, str]:
        return _reference_recipe(model, preprocess)

    def load(self, model: str) -> Loaded:
        return Loaded(None)

    def inspect(self, model: str, verify: bool) -> Loaded:
        return Loaded(None)


@dataclass(frozen=True)
class TorchvisionWeights:
    name: str  # the enum member's own name (DEFAULT resolved)
    kind = "torchvision"

    @property
    def label(self) -> str:
        return self.name

    def recipe(self, model: str, preprocess: str | None) -> tuple[Preprocessing, str]:
        if preprocess is not None and preprocess != self.name:
            raise UsageError("--preprocess applies only to --weights none or a checkpoint")
        return _release_recipe(model, self.name), self.name

    def load(self, model: str) -> Loaded:
        from .models import MODELS

        url = architecture(model).release(self.name).url
        try:
            state = MODELS[model].weights_enum[self.name].get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # URLError, HTTPError, socket errors, hash mismatch
            raise WeightsUnavailableError(
                f"cannot download {model} {self.name} weights from {url} "
                f"({type(exc).__name__}: {one_line(exc, 120)}); offline, use --weights none for a trial run "
                f"(random weights), pass --weights PATH-or-URI to a checkpoint, or put {url.rsplit('/', 1)[-1]} "
                "in torch's hub cache ($TORCH_HOME/hub/checkpoints/, default ~/.cache/torch/hub/checkpoints/)"
            ) from None
        return Loaded(state, imagenet_categories())

    def inspect(self, model: str, verify: bool) -> Loaded:
        """The class names; with `verify`, the release downloaded now unless torch's cache has it."""
        if verify and not hub_checkpoint(architecture(model).release(self.name).url).is_file():
            self.load(model)
        return Loaded(None, imagenet_categories())


@dataclass(frozen=True)
class CheckpointFile:
    uri: str
    kind = "checkpoint"

    @property
    def label(self) -> str:
        return self.uri

    def recipe(self, model: str, preprocess: str | None) -> tuple[Preprocessing, str]:
        return _reference_recipe(model, preprocess)

    def load(self, model: str) -> Loaded:
        try:
            return read_checkpoint(self.uri)
        except CheckpointNotFound as exc:  # often a misspelt name rather than a path
            raise WeightsUnavailableError(f"{exc}; --weights {valid_weights(model)}") from None

    def inspect(self, model: str, verify: bool) -> Loaded:
        return self.load(model)  # read in any case: the class count and names are inside


@dataclass(frozen=True)
class PretrainedFolder:
    uri: str  # as given: a folder, a .safetensors file inside one, or hf:ORG/NAME
    kind = "hf"

    @property
    def label(self) -> str:
        return self.uri

    def info(self) -> hf.FolderInfo:
        # Looked up where it runs: a worker on another node finds hf:ORG/NAME in its own cache.
        folder = hf.pretrained_dir(self.uri)
        if folder is None:  # it was one when the source was chosen: gone since
            raise WeightsUnavailableError(f"--weights {self.uri}: the pretrained folder is gone")
        return hf.describe_folder(folder)

    def recipe(self, model: str, preprocess: str | None) -> tuple[Preprocessing, str]:
        info = self.info()
        if info.architecture != model:
            raise UsageError(
                f"--weights {self.uri} holds a {info.architecture} checkpoint; use --model {info.architecture}"
            )
        if info.preprocessing and not preprocess:
            return info.preprocessing, info.config_file
        return _reference_recipe(model, preprocess)

    def load(self, model: str) -> Loaded:
        info = self.info()
        weight_file = Path(self.uri) if self.uri.endswith(".safetensors") else info.weight_file
        loaded = read_checkpoint(str(weight_file))
        return Loaded(loaded.state, info.names or loaded.names)

    def inspect(self, model: str, verify: bool) -> Loaded:
        return self.load(model)


WeightsSource = RandomInit | TorchvisionWeights | CheckpointFile | PretrainedFolder


def weights_source(model: str, weights: str) -> WeightsSource:
    """What --weights names, decided from its form alone (nothing is read yet)."""
    choice = choose_weights(model, weights)
    if choice.kind == "none":
        return RandomInit()
    if choice.kind == "release":
        return TorchvisionWeights(choice.value)
    if hf.pretrained_dir(weights) is not None:
        return PretrainedFolder(weights)
    return CheckpointFile(weights)


@dataclass(frozen=True)
class ResolvedWeights:
    """Everything a worker needs to rebuild the model, cheap to pickle."""

    model: str
    source: WeightsSource
    preprocessing: Preprocessing
    preprocess_from: str  # the torchvision weights (or the config file) whose recipe we follow
    categories: tuple[str, ...]  # one name per output of the classifier

    @property
    def weights(self) -> str:
        """What the user asked for, normalised: enum name, "none" or the URI."""
        return self.source.label

    @property
    def embedding_dim(self) -> int:
        return feature_width(self.model, POOLED)

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return self.source.load(self.model).state


def resolve_weights(
    model: str, weights: str, preprocess: str | None = None, labels: str | None = None, verify: bool = True
) -> ResolvedWeights:
    """The weights, their preprocessing and class names, checked as workers will load them.

    `verify=False` skips fetching torchvision's weights (their metadata needs no download);
    checkpoints are always read, since their class count and names are inside them.
    """
    check_model(model)
    source = weights_source(model, weights)
    preprocessing, preprocess_from = source.recipe(model, preprocess)
    loaded = source.inspect(model, verify)
    num_classes: int | None
    if loaded.state is not None:
        from .models import check_fits  # torch is imported by now: it read the state dict

        num_classes = check_fits(model, loaded.state, source.label)
    elif isinstance(source, RandomInit):
        num_classes = None if labels else 1000  # random init: as many outputs as the labels file names
    else:  # a torchvision release, not read here: one output per class it ships
        num_classes = len(loaded.names) if loaded.names is not None else None
    names = loaded.names
    if labels:
        names = read_labels(labels)
        if num_classes is not None and len(names) != num_classes:
            raise UsageError(f"--labels {labels} names {len(names)} classes but the weights have {num_classes}")
    if names is None:  # random init without labels: the reference recipe's ImageNet names
        names = imagenet_categories()
    if num_classes is not None and len(names) != num_classes:  # a fine-tuned head without its names
        names = tuple(str(i) for i in range(num_classes))
    return ResolvedWeights(model, source, preprocessing, preprocess_from, tuple(names))


def build_model(resolved: ResolvedWeights, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The model for `resolved` with its weights loaded (its own state dict unless `state`),
    in eval mode, on the CPU; the release tables checked against the torchvision installed."""
    from .models import build_network, check_release_tables

    check_release_tables(resolved.model, resolved.preprocess_from, resolved.categories)
    return build_network(resolved.model, len(resolved.categories), resolved.state_dict() if state is None else state)
