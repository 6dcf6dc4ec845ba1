"""Pretrained folders on the Hugging Face hub's formats, read into torchvision's layout.

Two writers of such folders: transformers (`ResNetForImageClassification`: config.json with
`model_type: resnet`, preprocessor_config.json, its own key names, converted here) and timm
(config.json with `architecture` and `pretrained_cfg`; its ResNets use torchvision's key
names). Neither library is imported. Sources: `hf:org/name` (hub cache, or a download
through huggingface_hub when installed), a `save_pretrained` directory, or a
`.safetensors` file beside its config.json.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UsageError, WeightsUnavailableError, require
from ..data.preprocessing import Preprocessing
from .class_names import class_names
from .registry import ARCHITECTURES, HF_PREFIX, IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# (layer_type, depths) of a transformers ResNet config -> torchvision model (registry.py)
HF_LAYOUTS = {a.hf_layout: a.name for a in ARCHITECTURES.values() if a.hf_layout}
# timm's ResNets with torchvision's block layout (its "d" stems and others differ).
TIMM_ARCHITECTURES = tuple(a.name for a in ARCHITECTURES.values() if a.timm_layout)
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes in image-processor files


def is_hf_state_dict(keys: Iterable[str]) -> bool:
    return any(k.startswith(("resnet.embedder.", "embedder.embedder.")) for k in keys)


def _cached_snapshot(repo: str) -> Path | None:
    """The hub cache's snapshot of `repo` (refs/main when recorded), without any network."""
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
    root = Path(cache).expanduser() / f"models--{repo.replace('/', '--')}"
    ref = root / "refs" / "main"
    if ref.exists() and (root / "snapshots" / ref.read_text().strip()).is_dir():
        return root / "snapshots" / ref.read_text().strip()
    snapshots = sorted((root / "snapshots").glob("*"))
    return snapshots[-1] if snapshots else None


def _hub_snapshot(repo: str) -> Path:
    cached = _cached_snapshot(repo)
    if cached is not None:
        return cached
    hub = require(
        "huggingface_hub",
        "hf",
        needed_for=f"hf:{repo} is not in the Hugging Face cache; downloading it",
        error=WeightsUnavailableError,
        otherwise="or pass a save_pretrained directory with --weights",
    )
    try:
        return Path(hub.snapshot_download(repo, allow_patterns=["*.json", *WEIGHT_FILES]))
    except Exception as exc:
        raise WeightsUnavailableError(
            f"cannot fetch hf:{repo} from the Hugging Face hub ({type(exc).__name__}); "
            "pass a save_pretrained directory or a .safetensors file with --weights"
        ) from None


def pretrained_dir(weights: str) -> Path | None:
    """The directory holding config.json for a pretrained-folder source, or None when it is not one."""
    if weights.startswith(HF_PREFIX):
        return _hub_snapshot(weights[len(HF_PREFIX) :])
    path = Path(weights)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UsageError(f"--weights {weights} is a directory without config.json (not a save_pretrained folder)")
        return path
    if path.suffix == ".safetensors" and (path.parent / "config.json").exists():
        return path.parent
    return None


@dataclass(frozen=True)
class FolderInfo:
    architecture: str  # the torchvision model name
    names: tuple[str, ...] | None  # class names, by class index
    preprocessing: Preprocessing | None  # when the folder says
    weight_file: Path
    config_file: str  # where the preprocessing came from, for the run's metadata


def describe_folder(folder: Path) -> FolderInfo:
    """What a transformers or timm save_pretrained folder holds."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise WeightsUnavailableError(f"cannot read {folder / 'config.json'}: {exc}") from None
    weight_file = next((folder / f for f in WEIGHT_FILES if (folder / f).exists()), None)
    if weight_file is None:
        raise WeightsUnavailableError(f"{folder} has none of {', '.join(WEIGHT_FILES)}")
    if "architecture" in config:  # timm: its ResNets keep torchvision's layout and names
        arch = config["architecture"]
        if arch not in TIMM_ARCHITECTURES:
            raise UsageError(f"{folder} holds a timm {arch!r}; supported: {', '.join(TIMM_ARCHITECTURES)}")
        return FolderInfo(
            arch,
            _config_names(config, "label_names", folder),
            _timm_preprocessing(config.get("pretrained_cfg") or {}),
            weight_file,
            "config.json pretrained_cfg",
        )
    if config.get("model_type") != "resnet":
        raise UsageError(f"{folder} holds a {config.get('model_type')!r} model, not a ResNet")
    values = _processor_preprocessing(folder)
    names = _config_names(config, "id2label", folder)
    return FolderInfo(_hf_architecture(config), names, values, weight_file, "preprocessor_config.json")


def _hf_architecture(config: dict) -> str:
    key = (config.get("layer_type"), tuple(config.get("depths", ())))
    if key not in HF_LAYOUTS or config.get("downsample_in_bottleneck") or config.get("embedding_size", 64) != 64:
        raise UsageError(
            f"Hugging Face ResNet config {key} does not match a torchvision ResNet; supported: "
            + ", ".join(f"{t} {list(d)} ({m})" for (t, d), m in HF_LAYOUTS.items())
        )
    return HF_LAYOUTS[key]


def _config_names(config: dict, key: str, folder: Path) -> tuple[str, ...] | None:
    """The class names under `key` (transformers' id2label, timm's label_names), if any."""
    return class_names(config[key], f"{folder} config.json {key}") if config.get(key) else None


def _timm_preprocessing(cfg: dict) -> Preprocessing | None:
    """timm's eval transform: resize the shorter side to floor(crop / crop_pct), center-crop."""
    if not cfg.get("input_size"):
        return None
    crop = int(cfg["input_size"][-1])
    return Preprocessing(
        resize_size=math.floor(crop / float(cfg.get("crop_pct", 0.875))),
        crop_size=crop,
        mean=tuple(float(m) for m in cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(float(s) for s in cfg.get("std", IMAGENET_STD)),
        interpolation=cfg.get("interpolation", "bilinear"),
    )


def _processor_preprocessing(folder: Path) -> Preprocessing | None:
    """Resize/crop/mean/std/interpolation from preprocessor_config.json (ConvNext/ViT processors)."""
    path = folder / "preprocessor_config.json"
    if not path.exists():
        return None
    cfg = json.loads(path.read_text())
    size = cfg.get("size", {})
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crop = cfg.get("crop_size")
    crop = crop.get("height") if isinstance(crop, dict) else crop
    if "shortest_edge" in size and cfg.get("crop_pct"):
        crop = size["shortest_edge"]
        resize = int(size["shortest_edge"] / cfg["crop_pct"])
    elif "shortest_edge" in size:
        resize, crop = size["shortest_edge"], crop or size["shortest_edge"]
    else:
        resize = crop = size.get("height", 224)
    return Preprocessing(
        resize_size=int(resize),
        crop_size=int(crop),
        mean=tuple(float(m) for m in cfg.get("image_mean", IMAGENET_MEAN)),
        std=tuple(float(s) for s in cfg.get("image_std", IMAGENET_STD)),
        interpolation=RESAMPLE.get(cfg.get("resample", 2), "bilinear"),
    )


_RULES = [
    (r"^resnet\.embedder\.embedder\.convolution\.", "conv1."),
    (r"^resnet\.embedder\.embedder\.normalization\.", "bn1."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.", "layer{s}.{b}.downsample.0."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.", "layer{s}.{b}.downsample.1."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.", "layer{s}.{b}.conv{i}."),
    (r"^resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization\.", "layer{s}.{b}.bn{i}."),
    (r"^classifier\.1\.", "fc."),
]


def convert_key(key: str) -> str | None:
    key = key if key.startswith(("resnet.", "classifier.")) else f"resnet.{key}"
    for pattern, template in _RULES:
        match = re.match(pattern, key)
        if match:
            # HF counts stages and layers-within-a-block from 0; torchvision's layerN and convN from 1.
            offsets = (1, 0, 1)
            names = {n: int(g) + o for n, g, o in zip("sbi", match.groups(), offsets, strict=False)}
            return template.format(**names) + key[match.end() :]
    return None


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ResNet keys -> torchvision keys; refuses keys it does not understand."""
    converted, unknown = {}, []
    for key, value in state.items():
        new = convert_key(key)
        if new is None:
            unknown.append(key)
        else:
            converted[new] = value
    if unknown:
        raise WeightsUnavailableError(f"unexpected keys in Hugging Face checkpoint: {', '.join(unknown[:5])}")
    return converted
