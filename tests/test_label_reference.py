"""End-to-end: the job's numbers equal torchvision's own transforms and model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torchvision.models as tvm

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.core.columns import OutputColumns
from resnet_batch.run.job import run_label

from .conftest import reference_image


def reference_outputs(model_name: str, ckpt, weights_for_transforms: str, paths):
    """(embeddings, logits) from torchvision: weights.transforms() on the PIL image, then the model."""
    weights = tvm.get_model_weights(model_name)[weights_for_transforms]
    model = tvm.get_model(model_name, weights=None)
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    model.eval()
    pooled: dict[str, Any] = {}
    model.avgpool.register_forward_hook(lambda m, i, o: pooled.__setitem__("x", o.flatten(1)))
    transform = weights.transforms()
    embeddings, logits = {}, {}
    with torch.no_grad():
        for p in paths:
            out = model(transform(reference_image(p)).unsqueeze(0))
            embeddings[str(p)] = pooled["x"][0].numpy()
            logits[str(p)] = out[0].numpy()
    return embeddings, logits


def check_against_reference(table: pa.Table, embeddings: dict, logits: dict, top_k: int) -> None:
    rows = table.to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(embeddings)
    for row in rows:
        assert row["error"] is None, row
        ref_emb = embeddings[row["path"]]
        emb = np.asarray(row["embedding"], dtype=np.float32)
        scale = max(1.0, float(np.abs(ref_emb).max()))
        assert np.abs(emb - ref_emb).max() <= 1e-4 * scale, row["path"]
        ref_probs = torch.softmax(torch.from_numpy(logits[row["path"]]), 0).numpy()
        probs, ids = np.asarray(row["topk_probs"]), np.asarray(row["topk_ids"])
        assert len(ids) == top_k
        # The reference's own top-k probabilities, and the probability it gives our chosen classes.
        np.testing.assert_allclose(probs, np.sort(ref_probs)[::-1][:top_k], rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(ref_probs[ids], probs, rtol=1e-4, atol=1e-7)
        categories = tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
        assert row["topk_labels"] == [categories[i] for i in ids]


@pytest.mark.parametrize(
    "model_name, ckpt_fixture, preprocess, resize",
    [
        ("resnet18", "resnet18_ckpt", None, 256),
        ("resnet50", "resnet50_ckpt", "IMAGENET1K_V2", 232),
    ],
)
def test_label_matches_torchvision_reference(
    request, ray_local, reference_images, tmp_path, model_name, ckpt_fixture, preprocess, resize
):
    ckpt = request.getfixturevalue(ckpt_fixture)
    out = tmp_path / "out"
    cfg = LabelConfig.of(
        inputs=(str(reference_images[0].parent),),
        output=str(out),
        model=model_name,
        weights=str(ckpt),
        preprocess=preprocess,
        precision="fp32",
        top_k=5,
        batch_size=4,
    )
    summary = run_label(cfg)
    assert summary.complete and summary.inputs == len(reference_images)
    assert sum(summary.errors.values()) == 0

    table = pq.read_table(out)
    dim = 512 if model_name == "resnet18" else 2048
    assert table.schema.remove_metadata().equals(OutputColumns(dim).schema())
    assert table.num_rows == len(reference_images)
    assert table.schema.field("embedding").type.list_size == dim

    meta = pq.read_schema(next(out.glob("part-*.parquet"))).metadata
    assert meta[b"resnet_batch.model"].decode() == model_name
    assert meta[b"resnet_batch.weights"].decode() == str(ckpt)
    assert f'"resize_size": {resize}'.encode() in meta[b"resnet_batch"]

    emb, logits = reference_outputs(model_name, ckpt, preprocess or "IMAGENET1K_V1", reference_images)
    check_against_reference(table, emb, logits, top_k=5)
