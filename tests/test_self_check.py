"""A model actor checks its GPU JPEG path at warm-up and decodes on its CPU when the path
raises or returns wrong pixels; the job says so once, naming the actor's node.

On this machine the device path runs on the CPU (torchvision's decoder, the batched
resize): the honest path passes; test doubles of the device decoder stand for a GPU
decoder that fails."""

from __future__ import annotations

import logging
import re
import socket

import numpy as np
import pytest
import torch

from resnet_batch.config.plan import PoolNeeds
from resnet_batch.core.columns import OutputColumns
from resnet_batch.data.decode import JPEG_COLUMN, DecodeStage, JpegHandoff
from resnet_batch.device import decoders
from resnet_batch.device.decoders import DeviceDecoder, HostDecoder, NvJpeg
from resnet_batch.device.self_check import MAX_MEAN_DIFF, check_jpegs, device_path_error
from resnet_batch.model.inference import Predictor
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights
from resnet_batch.run.progress.counter import Counts
from resnet_batch.run.progress.watch import RunWatch

from .helpers import RecordingReporter

CPU = torch.device("cpu")


class RaisingBackend(NvJpeg):
    def decode(self, jpegs):
        raise RuntimeError("nvjpegDecodeBatched failed: NVJPEG_STATUS_EXECUTION_FAILED")


class SwappedChannelsBackend(NvJpeg):
    """Decodes, then hands back BGR: every image decodes, every crop is wrong."""

    def decode(self, jpegs):
        images, errors = super().decode(jpegs)
        return {i: image.flip(0).contiguous() for i, image in images.items()}, errors


class DroppingBackend(NvJpeg):
    """Loses the last image of every batch without a word."""

    def decode(self, jpegs):
        images, errors = super().decode(jpegs)
        images.pop(len(jpegs) - 1, None)
        return images, errors


def test_the_check_images_cover_the_jpeg_kinds_and_the_honest_path_passes():
    names = [name for name, _ in check_jpegs()]
    assert any(n.startswith("grey") for n in names) and any(n.startswith("progressive") for n in names)
    assert any(n.startswith("restart markers") for n in names) and any("4:4:4" in n for n in names)
    prep = resolve_weights("resnet18", "none").preprocessing
    assert device_path_error(DeviceDecoder(prep, CPU, NvJpeg(CPU)), prep) is None
    assert device_path_error(HostDecoder(prep, CPU), prep) is None


@pytest.mark.parametrize(
    "backend, says",
    [
        (RaisingBackend, r"^RuntimeError: nvjpegDecodeBatched failed: NVJPEG_STATUS_EXECUTION_FAILED$"),
        (
            SwappedChannelsBackend,
            r"^its crop of the baseline 4:2:0 500x375 check image differs from the CPU path's by "
            rf"\d+\.\d grey levels on average \(at most {MAX_MEAN_DIFF}\)$",
        ),
    ],
)
def test_a_failing_device_path_is_named(backend, says):
    prep = resolve_weights("resnet18", "none").preprocessing
    error = device_path_error(DeviceDecoder(prep, CPU, backend(CPU)), prep)
    assert error is not None
    assert re.match(says, error), error


def test_a_device_path_that_loses_an_image_fails_the_check():
    prep = resolve_weights("resnet18", "none").preprocessing
    error = device_path_error(DeviceDecoder(prep, CPU, DroppingBackend(CPU)), prep)
    assert error is not None and error.startswith("returned crops of shape (6, 3, 224, 224)"), error


@pytest.mark.parametrize("backend", [RaisingBackend, SwappedChannelsBackend])
def test_the_actor_falls_back_to_the_cpu_and_labels_as_the_cpu_path(
    backend, monkeypatch, reference_images, resnet18_ckpt
):
    monkeypatch.setitem(decoders.BACKENDS, "nvjpeg", backend)
    resolved = resolve_weights("resnet18", str(resnet18_ckpt))
    reporter = RecordingReporter()
    settings = InferenceSettings(weights=resolved, precision="fp32", top_k=3, device="cpu", gpu_decoder="nvjpeg")
    predictor = Predictor(settings, OutputColumns(512).schema(), reporter)
    assert isinstance(predictor.feed.decoder, HostDecoder)
    ((where, error),) = reporter.named("device_path_failed")
    assert where.startswith(socket.gethostname()) and error.startswith("nvjpeg: ")

    paths = np.array([str(p) for p in reference_images], dtype=object)
    deferred = DecodeStage(resolved.preprocessing, handoff=JpegHandoff())({"path": paths})
    assert sum(bool(b) for b in deferred[JPEG_COLUMN]) >= 5  # the JPEGs the device would have decoded
    reference = DecodeStage(resolved.preprocessing)({"path": paths})
    plain = Predictor(
        InferenceSettings(weights=resolved, precision="fp32", top_k=3, device="cpu"), OutputColumns(512).schema()
    )
    got, want = predictor(deferred).to_pylist(), plain(reference).to_pylist()
    for g, w in zip(got, want, strict=False):
        assert g["error"] is None and g["topk_ids"] == w["topk_ids"]
        np.testing.assert_allclose(g["embedding"], w["embedding"], rtol=1e-5, atol=1e-6)
    times = reporter.named("batch_times")
    assert times and all(t.device_decoded == 0 for (t,) in times)  # the host's seconds are not the device's


class FixedCounter:
    """The driver's view of the counter (watch.Polled) with fixed counts."""

    def __init__(self, counts: Counts):
        self.counts = counts

    def poll(self, wait: bool = False) -> Counts:
        return self.counts


def test_the_driver_warns_once_per_reason(caplog):
    failures = (
        ("node-a (pid 1)", "nvjpeg: RuntimeError: boom"),
        ("node-b (pid 2)", "nvjpeg: RuntimeError: boom"),
        ("node-b (pid 3)", "nvimgcodec: its crop differs"),
    )
    watch = RunWatch(FixedCounter(Counts(device_path_failures=failures)), walks=0, needs=PoolNeeds(3, 1, 1, 600))
    with caplog.at_level(logging.WARNING, logger="resnet_batch.run.progress.watch"):
        watch.snapshot(0, 0)
        watch.snapshot(0, 0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "GPU decoding failed its check on node-a (pid 1): nvjpeg: RuntimeError: boom; that model actor decodes JPEGs "
        "on its CPU for the rest of the job",
        "GPU decoding failed its check on node-b (pid 3): nvimgcodec: its crop differs; that model actor decodes "
        "JPEGs on its CPU for the rest of the job",
    ]
