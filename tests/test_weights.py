"""Your own checkpoints: class names, labels files, timm's formats, the wider ResNet family."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from safetensors.torch import save_file

from resnet_batch.core.errors import UsageError
from resnet_batch.data.decode import DecodeStage
from resnet_batch.model.models import MODELS, identify_architecture
from resnet_batch.model.network import Network
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights

from .helpers import scramble_batch_norms


def test_every_architecture_is_recognised_from_its_state_dict():
    for name, spec in MODELS.items():
        with torch.device("meta"):
            state = spec.builder(num_classes=7).state_dict()
        assert identify_architecture(state) == name


def test_checkpoint_of_another_family_member_names_it(tmp_path):
    torch.save(tvm.wide_resnet50_2(num_classes=3).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(UsageError, match="holds a wide_resnet50_2 state dict; use --model wide_resnet50_2"):
        resolve_weights("resnext50_32x4d", str(tmp_path / "wide.pth"))


def test_class_names_saved_beside_the_state_dict(tmp_path):
    state = tvm.resnet18(num_classes=3).state_dict()
    torch.save({"model": state, "classes": ["cat", "dog", "fox"], "epoch": 9}, tmp_path / "list.pt")
    torch.save({"state_dict": state, "id2label": {"0": "cat", "1": "dog", "2": "fox"}}, tmp_path / "map.pt")
    for name in ("list.pt", "map.pt"):
        assert resolve_weights("resnet18", str(tmp_path / name)).categories == ("cat", "dog", "fox")


@pytest.mark.parametrize(
    "content",
    [
        "ant\nbee\nwasp\n",
        json.dumps(["ant", "bee", "wasp"]),
        json.dumps({"2": "wasp", "0": "ant", "1": "bee"}),
    ],
)
def test_labels_file_names_the_classes(tmp_path, content):
    torch.save(tvm.resnet18(num_classes=3).state_dict(), tmp_path / "three.pth")
    (tmp_path / "labels").write_text(content)
    resolved = resolve_weights("resnet18", str(tmp_path / "three.pth"), labels=str(tmp_path / "labels"))
    assert resolved.categories == ("ant", "bee", "wasp")


def test_labels_file_must_fit_a_torchvision_release(tmp_path):
    """Checked in the driver, which reads no torchvision release: their heads have 1,000 outputs."""
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(UsageError, match="names 2 classes but the weights have 1000"):
        resolve_weights("resnet18", "IMAGENET1K_V1", labels=str(tmp_path / "labels.txt"), verify=False)
    (tmp_path / "labels.txt").write_text("".join(f"class {i}\n" for i in range(1000)))
    resolved = resolve_weights("resnet18", "IMAGENET1K_V1", labels=str(tmp_path / "labels.txt"), verify=False)
    assert resolved.categories[999] == "class 999"


def test_labels_file_gives_random_init_its_class_count(tmp_path):
    (tmp_path / "labels.txt").write_text("a\nb\n")
    resolved = resolve_weights("resnet18", "none", labels=str(tmp_path / "labels.txt"))
    network = Network(InferenceSettings(weights=resolved, top_k=2, precision="fp32"))
    assert resolved.categories == ("a", "b") and network.model.fc.out_features == 2


@pytest.mark.parametrize(
    "content, needle",
    [
        ("a\nb\n", "--labels .* names 2 classes but the weights have 3"),
        ('{"0": "a", "2": "c"}', "class ids must be 0..1 without gaps"),
        ("a\n\nc\n", "must name every class"),
        ('["a", ', "is not valid JSON"),
        ('["a", null, "c"]', r"class 1 has no name \(got null\)"),
        ('{"0": "a", "1": null, "2": "c"}', r"class 1 has no name \(got null\)"),
    ],
)
def test_bad_labels_files_are_one_line_errors(tmp_path, content, needle):
    torch.save(tvm.resnet18(num_classes=3).state_dict(), tmp_path / "three.pth")
    (tmp_path / "labels").write_text(content)
    with pytest.raises(UsageError, match=needle) as info:
        resolve_weights("resnet18", str(tmp_path / "three.pth"), labels=str(tmp_path / "labels"))
    assert "\n" not in str(info.value)


def timm_model(name: str, num_classes: int = 1000):
    """A timm model (its tests skip, saying so, where timm is not installed; the rest run)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    scramble_batch_norms(model)
    return model


def test_timm_state_dicts_load_and_equal_timm(tmp_path, reference_images):
    model = timm_model("resnet50", num_classes=5)
    save_file(model.state_dict(), tmp_path / "timm-resnet50.safetensors")
    with pytest.raises(UsageError, match="holds a resnet50 state dict; use --model resnet50"):
        resolve_weights("resnet34", str(tmp_path / "timm-resnet50.safetensors"))
    resolved = resolve_weights("resnet50", str(tmp_path / "timm-resnet50.safetensors"))
    assert resolved.categories == tuple("01234")
    batch = DecodeStage(resolved.preprocessing)(
        {"path": np.array([str(p) for p in reference_images[:2]], dtype=object)}
    )
    out = Network(InferenceSettings(weights=resolved, precision="fp32")).run_model(batch["image"])
    prep = resolved.preprocessing
    x = (torch.from_numpy(batch["image"]).float().div(255) - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(
        prep.std
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(out["logits"], model(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            out["embedding"], model.forward_head(model.forward_features(x), pre_logits=True), rtol=1e-4, atol=1e-4
        )


def test_timm_hub_folder_brings_its_recipe_and_names(tmp_path):
    model = timm_model("resnet18", num_classes=3)  # skips where timm is not installed
    from timm.models._hub import save_for_hf

    save_for_hf(
        model, str(tmp_path / "folder"), model_config={"label_names": ["ant", "bee", "wasp"]}, safe_serialization=True
    )
    resolved = resolve_weights("resnet18", str(tmp_path / "folder"))
    config = pytest.importorskip("timm").data.resolve_data_config({}, model=model)
    prep = resolved.preprocessing
    assert resolved.source.kind == "hf" and resolved.categories == ("ant", "bee", "wasp")
    assert prep.crop_size == config["input_size"][-1] and prep.interpolation == config["interpolation"]
    assert prep.resize_size == int(config["input_size"][-1] / config["crop_pct"])
    assert prep.mean == pytest.approx(config["mean"]) and prep.std == pytest.approx(config["std"])
    with pytest.raises(UsageError, match="holds a resnet18 checkpoint; use --model resnet18"):
        resolve_weights("resnet50", str(tmp_path / "folder"))
