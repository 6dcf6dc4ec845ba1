"""Model registry and checkpoint loading, without Ray."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision.models as tvm

from resnet_batch.core.errors import UsageError, WeightsUnavailableError
from resnet_batch.data.preprocessing import Preprocessing
from resnet_batch.model.models import MODELS, fold_batch_norms, forward_stages
from resnet_batch.model.registry import ARCHITECTURES, describe_models
from resnet_batch.model.weights import build_model, hub_checkpoint, resolve_weights

from .helpers import scramble_batch_norms


def test_registry_widths_and_weights():
    rows = {r["model"]: r for r in describe_models()}
    assert list(rows) == [
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "wide_resnet50_2",
        "wide_resnet101_2",
    ]
    for name, row in rows.items():  # the torch-free registry agrees with torchvision's builders
        with torch.device("meta"):
            fc = MODELS[name].builder().fc
            assert isinstance(fc, torch.nn.Linear)
            assert row["embedding_dim"] == ARCHITECTURES[name].embedding_dim == fc.in_features
    assert "IMAGENET1K_V2" in rows["resnet101"]["weights"] and "IMAGENET1K_V2" not in rows["resnet34"]["weights"]


@pytest.mark.parametrize("model", list(ARCHITECTURES))
def test_release_table_is_torchvisions(model):
    """What the driver knows without torch (registry.py) is what torchvision's enums say."""
    enum = tvm.get_model_weights(model)
    arch = ARCHITECTURES[model]
    assert [r.name for r in arch.releases] == [w.name for w in enum]
    assert arch.default == arch.release("DEFAULT").name == enum.DEFAULT.name
    for w in enum:
        resolved = resolve_weights(model, w.name, verify=False)
        preset = w.transforms()
        expected = Preprocessing(
            preset.resize_size[0],
            preset.crop_size[0],
            tuple(preset.mean),
            tuple(preset.std),
            preset.interpolation.value,
        )
        assert resolved.preprocessing == expected and resolved.preprocess_from == w.name
        assert resolved.categories == tuple(w.meta["categories"])
        record = arch.release(w.name)
        assert record.url == w.url and record.recipe == expected
        assert record.categories == tuple(w.meta["categories"])
        metrics = w.meta["_metrics"]["ImageNet-1K"]
        assert (record.acc1, record.acc5) == (metrics["acc@1"], metrics["acc@5"])
        assert hub_checkpoint(w.url).name == os.path.basename(w.url)


def test_actors_refuse_tables_their_torchvision_disagrees_with(monkeypatch):
    """A node whose torchvision describes a release otherwise than the driver's tables stops the
    job instead of labeling with another recipe or other class names."""
    import resnet_batch.model.models as models

    resolved = resolve_weights("resnet18", "none")
    build_model(resolved)  # the tables agree with the torchvision installed here
    arch = ARCHITECTURES["resnet18"]
    stale = dataclasses.replace(arch, releases=(dataclasses.replace(arch.releases[0], resize_size=232),))
    monkeypatch.setitem(ARCHITECTURES, "resnet18", stale)
    with pytest.raises(WeightsUnavailableError, match=r"resnet18 IMAGENET1K_V1 otherwise .* recipe \(256, 224"):
        build_model(resolved)
    monkeypatch.undo()
    renamed = dataclasses.replace(resolved, categories=("kitten", *resolved.categories[1:]))
    monkeypatch.setattr(models, "imagenet_categories", lambda: renamed.categories)  # a shipped list gone stale
    with pytest.raises(WeightsUnavailableError, match="its class names"):
        build_model(renamed)


def test_hub_checkpoint_is_where_torch_hub_looks(tmp_path, monkeypatch):
    url = ARCHITECTURES["resnet18"].release("IMAGENET1K_V1").url
    for env in (
        {"TORCH_HOME": str(tmp_path / "th")},
        {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
        {"HOME": str(tmp_path)},
    ):
        for var in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(var, raising=False)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        assert hub_checkpoint(url) == Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"


@pytest.mark.parametrize(
    "model, weights, resize",
    [
        ("resnet18", "DEFAULT", 256),
        ("resnet50", "IMAGENET1K_V1", 256),
        ("resnet50", "DEFAULT", 232),
        ("resnet152", "IMAGENET1K_V2", 232),
        ("resnet101", "none", 256),
        ("resnext50_32x4d", "DEFAULT", 232),
        ("resnext101_64x4d", "DEFAULT", 232),
        ("wide_resnet101_2", "IMAGENET1K_V1", 256),
    ],
)
def test_preprocessing_comes_from_weights(model, weights, resize):
    resolved = resolve_weights(model, weights, verify=False)
    expected = tvm.get_model_weights(model).DEFAULT if weights == "DEFAULT" else None
    assert resolved.preprocessing.resize_size == resize and resolved.preprocessing.crop_size == 224
    if expected is not None:
        assert resolved.weights == expected.name and resolved.preprocessing.interpolation == "bilinear"
    assert len(resolved.categories) == 1000 and resolved.categories[0] == "tench"


@pytest.mark.parametrize(
    "model, weights, needle",
    [
        (
            "resnet99",
            "DEFAULT",
            "valid: resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d, "
            "resnext101_32x8d, resnext101_64x4d, wide_resnet50_2, wide_resnet101_2",
        ),
        ("resnet18", "IMAGENET1K_V2", "valid: DEFAULT, IMAGENET1K_V1, none, PATH-or-URI"),
    ],
)
def test_bad_choices_name_valid_values(model, weights, needle):
    with pytest.raises(UsageError, match=needle):
        resolve_weights(model, weights)


def test_missing_download_says_how_to_pass_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights("resnet18", "DEFAULT")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and "--weights PATH-or-URI" in message
    assert "\n" not in message


def test_hub_cache_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    reference = tvm.resnet18()
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    model = build_model(resolve_weights("resnet18", "IMAGENET1K_V1"))
    assert isinstance(model.fc, torch.nn.Linear) and isinstance(reference.fc, torch.nn.Linear)
    assert torch.equal(model.fc.weight, reference.fc.weight)


def test_cached_release_resolves_without_torch(tmp_path):
    """The driver's check of a torchvision release in the hub cache reads nothing, imports no torch."""
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet50-11ad3fa6.pth").write_bytes(b"only workers read it")
    code = (
        "import sys; from resnet_batch.model.weights import resolve_weights; "
        "r = resolve_weights('resnet50', 'DEFAULT'); print(r.weights, len(r.categories), 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TORCH_HOME": str(tmp_path)},
    )
    assert result.stdout.split() == ["IMAGENET1K_V2", "1000", "False"], result.stderr


def _variants(tmp_path, state):
    from safetensors.torch import save_file

    paths: dict[str, Any] = {}
    torch.save(state, paths.setdefault("plain", tmp_path / "plain.pth"))
    torch.save({"state_dict": state, "epoch": 3}, paths.setdefault("wrapped", tmp_path / "wrapped.pt"))
    torch.save({f"module.{k}": v for k, v in state.items()}, paths.setdefault("ddp", tmp_path / "ddp.pth"))
    save_file({k: v.contiguous() for k, v in state.items()}, paths.setdefault("st", tmp_path / "m.safetensors"))
    return paths


def test_checkpoint_formats_load_identically(tmp_path):
    torch.manual_seed(1)
    reference = tvm.resnet18().eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference(x)
    for name, path in _variants(tmp_path, reference.state_dict()).items():
        model = build_model(resolve_weights("resnet18", str(path)))
        with torch.no_grad():
            pooled, logits = pooled_and_logits(model, x)
        torch.testing.assert_close(logits, expected, msg=name)
        assert pooled.shape == (2, 512)


def test_checkpoint_for_other_architecture_names_it(tmp_path, resnet18_ckpt):
    with pytest.raises(UsageError, match="holds a resnet18 state dict; use --model resnet18"):
        resolve_weights("resnet50", str(resnet18_ckpt))


def test_checkpoint_that_fits_no_resnet_is_refused(tmp_path):
    path = tmp_path / "odd.pth"
    state = tvm.resnet18().state_dict()
    del state["layer4.1.conv2.weight"]
    torch.save(state, path)
    with pytest.raises(WeightsUnavailableError, match="does not fit resnet18"):
        resolve_weights("resnet18", str(path))


def test_finetuned_head_gets_index_labels(tmp_path):
    path = tmp_path / "ten.pth"
    torch.save(tvm.resnet34(num_classes=10).state_dict(), path)
    assert resolve_weights("resnet34", str(path)).categories == tuple(str(i) for i in range(10))


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EXPLOIT_MARKER']}",))


def test_pickled_code_is_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": _Exploit()}, f)
    with pytest.raises(WeightsUnavailableError, match="cannot load checkpoint"):
        resolve_weights("resnet18", str(path))
    assert not marker.exists()


def test_missing_checkpoint(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="checkpoint not found"):
        resolve_weights("resnet18", str(tmp_path / "nope.pth"))


def pooled_and_logits(model, x):
    """What the job's forward gives for the embedding and the labels, in one pass."""
    _, pooled, logits = forward_stages(model, x, deepest=4, logits=True)
    return pooled, logits


def test_forward_stages_equals_model_forward():
    model = MODELS["resnet50"].builder().eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(pooled_and_logits(model, x)[1], model(x))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])  # BasicBlock and Bottleneck
def test_folded_batch_norms_give_the_unfolded_outputs(name):
    torch.manual_seed(0)
    model = MODELS[name].builder().eval()
    scramble_batch_norms(model)  # statistics and affine far from identity
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.8, 1.2)
            module.bias.data.uniform_(-0.1, 0.1)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = pooled_and_logits(model, x)
        folded = fold_batch_norms(copy.deepcopy(model))
        pooled, logits = pooled_and_logits(folded, x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for ours, ref in zip((pooled, logits), expected, strict=False):  # fp32 rounding, relative to the output's scale
        assert (ours - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max()), (ours - ref).abs().max()
