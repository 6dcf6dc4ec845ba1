"""--decode gpu: JPEGs decoded by torchvision.io in the model actor (runs on CPU here too).

Tensor-path resizing differs slightly from the PIL reference; this pins how much.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch

from resnet_batch.config import LabelConfig
from resnet_batch.decode import JPEG_COLUMN, DecodeStage
from resnet_batch.inference import InferenceSettings, Predictor
from resnet_batch.weights import resolve_weights
from resnet_batch.pipeline import run_label
from resnet_batch.schema import output_schema


def test_device_decode_close_to_reference(reference_images, resnet18_ckpt, tmp_path):
    resolved = resolve_weights("resnet18", str(resnet18_ckpt))
    paths = np.array([str(p) for p in reference_images] + [str(tmp_path / "missing.jpg")], dtype=object)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(reference_images[0].read_bytes()[:600])  # a JPEG header, then nothing
    paths = np.append(paths, str(broken))
    reference = DecodeStage(resolved.preprocessing)({"path": paths})
    deferred = DecodeStage(resolved.preprocessing, defer_jpeg=True)({"path": paths})
    jpeg_rows = [i for i, b in enumerate(deferred[JPEG_COLUMN]) if b]
    assert len(jpeg_rows) >= 4 and not deferred["image"][jpeg_rows].any()
    np.testing.assert_array_equal(deferred["width"], reference["width"])  # sizes from headers + EXIF

    predictor = Predictor(InferenceSettings(weights=resolved, precision="fp32", top_k=3),
                          schema=output_schema(512, with_topk=True))
    ref_table = predictor(reference).to_pylist()
    dev_table = predictor(deferred).to_pylist()
    for ref, dev in zip(ref_table, dev_table):
        if ref["error"] is not None:
            assert dev["error"] is not None and dev["error"].split(":")[0] == ref["error"].split(":")[0]
            continue
        assert dev["error"] is None
        a, b = torch.tensor(dev["embedding"]), torch.tensor(ref["embedding"])
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.995, ref["path"]


def test_job_with_device_decode(ray_local, reference_images, tmp_path):
    cfg = LabelConfig(inputs=(str(reference_images[0].parent),), output=str(tmp_path / "out"), model="resnet18",
                      weights="none", decode="gpu", batch_size=4)
    summary = run_label(cfg)
    assert summary.complete and sum(summary.errors.values()) == 0
    assert pq.read_table(tmp_path / "out").num_rows == len(reference_images)
