"""Reduced-precision paths run on CPU and stay close to fp32 (bounds, not timings)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from resnet_batch.data.decode import DecodeStage
from resnet_batch.model.network import Network
from resnet_batch.model.settings import InferenceSettings, resolve_precision
from resnet_batch.model.weights import resolve_weights


def test_auto_precision_choice():
    from resnet_batch.model.settings import cpu_has_native_bf16

    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("fp16", "cpu") == "fp16"


@pytest.mark.parametrize("precision", ["bf16"])
def test_bf16_close_to_fp32(reference_images, resnet18_ckpt, precision):
    resolved = resolve_weights("resnet18", str(resnet18_ckpt))
    crops = DecodeStage(resolved.preprocessing)({"path": np.array([str(p) for p in reference_images], dtype=object)})
    base = InferenceSettings(weights=resolved, precision="fp32", top_k=5)
    e32, l32 = Network(base).run_model(crops["image"]).values()
    elo, llo = Network(dataclasses.replace(base, precision=precision)).run_model(crops["image"]).values()
    assert elo.dtype == torch.float32 and llo.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(elo, e32, dim=1)
    assert cosine.min() > 0.99
    rel = (llo - l32).abs().amax(1) / l32.abs().amax(1)
    assert rel.max() < 0.1
    assert not torch.equal(elo, e32)  # the reduced-precision path really ran
