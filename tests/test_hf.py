"""Hugging Face ResNet checkpoints: our converted model equals transformers' own forward pass."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.errors import UsageError
from resnet_batch.data.decode import DecodeStage
from resnet_batch.model.network import Network
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights
from resnet_batch.run.job import run_label

from .helpers import scramble_batch_norms

transformers = pytest.importorskip("transformers")

SHAPES = {
    "resnet18": dict(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512]),
    "resnet50": dict(layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048]),
}


def save_hf_model(name: str, folder, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.ResNetConfig(
        embedding_size=64,
        num_labels=1000,
        id2label={i: f"hf-class-{i}" for i in range(1000)},
        label2id={f"hf-class-{i}": i for i in range(1000)},
        **SHAPES[name],
    )
    model = transformers.ResNetForImageClassification(config).eval()
    scramble_batch_norms(model)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "ConvNextImageProcessor",
                "crop_pct": 0.875,
                "do_resize": True,
                "do_rescale": True,
                "do_normalize": True,
                "resample": 3,
                "size": {"shortest_edge": 224},
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
            }
        )
    )
    return model


def hf_outputs(model, normalised: torch.Tensor):
    with torch.no_grad():
        out = model(normalised, output_hidden_states=False)
        pooled = model.resnet(normalised).pooler_output.flatten(1)
    return pooled, out.logits


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_converted_weights_match_transformers(tmp_path, reference_images, name):
    model = save_hf_model(name, tmp_path / "ckpt")
    resolved = resolve_weights(name, str(tmp_path / "ckpt"))
    assert resolved.source.kind == "hf" and resolved.categories[5] == "hf-class-5"
    prep = resolved.preprocessing
    assert (prep.resize_size, prep.crop_size, prep.interpolation) == (256, 224, "bicubic")
    batch = DecodeStage(prep)({"path": np.array([str(p) for p in reference_images[:4]], dtype=object)})
    network = Network(InferenceSettings(weights=resolved, precision="fp32"))
    pooled, logits = network.run_model(batch["image"]).values()
    x = torch.from_numpy(batch["image"]).float().div(255)
    x = (x - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(prep.std).view(1, 3, 1, 1)
    ref_pooled, ref_logits = hf_outputs(model, x)
    torch.testing.assert_close(pooled, ref_pooled, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)


def test_safetensors_file_and_job_end_to_end(ray_local, tmp_path, reference_images):
    model = save_hf_model("resnet18", tmp_path / "ckpt", seed=3)
    weights = tmp_path / "ckpt" / "model.safetensors"
    out = tmp_path / "out"
    cfg = LabelConfig.of(
        inputs=(str(reference_images[0].parent),),
        output=str(out),
        model="resnet18",
        weights=str(weights),
        precision="fp32",
        batch_size=4,
        top_k=3,
    )
    assert run_label(cfg).complete
    table = pq.read_table(out)
    meta = json.loads(table.schema.metadata[b"resnet_batch"])
    assert meta["weights_source"] == "hf" and meta["preprocessing"]["interpolation"] == "bicubic"
    rows = table.to_pylist()
    assert all(r["topk_labels"][0].startswith("hf-class-") for r in rows)
    # Same numbers as transformers on the job's own crops.
    paths = [r["path"] for r in rows]
    prep = resolve_weights("resnet18", str(weights)).preprocessing
    batch = DecodeStage(prep)({"path": np.array(paths, dtype=object)})
    x = torch.from_numpy(batch["image"]).float().div(255)
    x = (x - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(prep.std).view(1, 3, 1, 1)
    ref_pooled, _ = hf_outputs(model, x)
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), ref_pooled.numpy(), rtol=1e-4, atol=1e-4)


def test_wrong_model_for_checkpoint(tmp_path):
    save_hf_model("resnet18", tmp_path / "ckpt")
    with pytest.raises(UsageError, match="holds a resnet18 checkpoint; use --model resnet18"):
        resolve_weights("resnet50", str(tmp_path / "ckpt"))


def test_hub_id_resolves_from_cache(tmp_path, monkeypatch):
    """hf:org/name is looked up in the standard Hugging Face cache layout."""
    snapshot = tmp_path / "hub" / "models--acme--resnet-18" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    save_hf_model("resnet18", snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_weights("resnet18", "hf:acme/resnet-18")
    assert resolved.categories[0] == "hf-class-0"
