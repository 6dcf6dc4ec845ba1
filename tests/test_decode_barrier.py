"""The decoder barrier (device/decoders.DecodeBarrier): no GPU decode call, the warm-up's
check included, runs before every stream that may still read its memory is drained.

On a CPU there is no stream to drain: the barrier here drains stand-in streams that count
their drains, and the backend (the real CPU decode behind a recorder) notes, at each call,
whether every stream was drained since its last call. The model actor's whole path runs:
warm-up, the JPEG path's check, the hazard trials' code, and batches from two threads at
once, as the job runs them. A code path that reached a backend around the barrier fails it.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_batch.core.columns import OutputColumns
from resnet_batch.data.decode import JPEG_COLUMN, DecodeStage, JpegHandoff
from resnet_batch.device import decoders, hazard
from resnet_batch.device.decoders import DecodeBarrier, DeviceDecoder, NvJpeg
from resnet_batch.device.self_check import check_jpegs
from resnet_batch.model.inference import Predictor
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights


class CountingStream:
    def __init__(self):
        self.drains = 0

    def synchronize(self) -> None:
        self.drains += 1


class RecordingBackend:
    """The CPU's real decode; at each call, whether every stream was drained since the last."""

    name = "nvjpeg"

    def __init__(self, device: torch.device, streams: list[CountingStream]):
        self.inner, self.streams = NvJpeg(device), streams
        self.seen = [s.drains for s in streams]
        self.calls: list[bool] = []
        self.lock = threading.Lock()

    def decode(self, jpegs):
        with self.lock:
            now = [s.drains for s in self.streams]
            self.calls.append(all(n > seen for n, seen in zip(now, self.seen, strict=True)))
            self.seen = now
        return self.inner.decode(jpegs)


@pytest.fixture
def recorded(monkeypatch):
    """Every DeviceDecoder made from now on drains two counting streams; its backend records."""
    streams = [CountingStream(), CountingStream()]
    backends: list[RecordingBackend] = []

    def backend(device):
        backends.append(RecordingBackend(device, streams))
        return backends[-1]

    monkeypatch.setitem(decoders.BACKENDS, "nvjpeg", backend)
    monkeypatch.setattr(DecodeBarrier, "for_device", classmethod(lambda cls, device: cls(lambda: streams)))
    return backends


def test_every_decode_of_the_model_actor_is_behind_the_barrier(recorded, reference_images):
    resolved = resolve_weights("resnet18", "none")
    paths = np.array([str(p) for p in reference_images] * 3, dtype=object)
    batch = DecodeStage(resolved.preprocessing, handoff=JpegHandoff())({"path": paths})
    assert sum(bool(b) for b in batch[JPEG_COLUMN]) >= 15
    predictor = Predictor(
        InferenceSettings(weights=resolved, precision="fp32", top_k=1, device="cpu", gpu_decoder="nvjpeg"),
        schema=OutputColumns(512).schema(),
    )
    tables = []
    threads = [threading.Thread(target=lambda: tables.append(predictor(dict(batch)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tables) == 4 and all(t.column("error").null_count == len(paths) for t in tables)
    (backend,) = recorded
    assert len(backend.calls) >= 5  # the warm-up's check, then each batch
    assert all(backend.calls), backend.calls


def test_the_hazard_trials_and_the_bench_decode_go_through_the_barrier(recorded):
    device = torch.device("cpu")
    decoder = DeviceDecoder(
        resolve_weights("resnet18", "none").preprocessing, device, decoders.BACKENDS["nvjpeg"](device)
    )
    jpegs = [data for _, data in check_jpegs()]
    found = hazard.corruption_trials(decoder.decode, device, jpegs, hazard.decoded_sizes(jpegs), trials=3)
    assert (found.corrupted, found.trials) == (0, 3) and str(found) == "corrupted 0 of 3"
    decoder(jpegs)
    assert recorded[0].calls == [True] * 4


def test_a_decode_around_the_barrier_is_seen(recorded):
    """The recorder can fail: a backend called without the barrier records it."""
    device = torch.device("cpu")
    decoder = DeviceDecoder(
        resolve_weights("resnet18", "none").preprocessing,
        device,
        decoders.BACKENDS["nvjpeg"](device),
        DecodeBarrier.off(),
    )
    decoder([data for _, data in check_jpegs()])
    assert recorded[0].calls == [False]


needs_gpu = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("kind", ["baseline", "progressive"])
@pytest.mark.parametrize("name", ["nvjpeg", "nvimgcodec"])
@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_gpu)])
def test_no_corruption_behind_the_barrier(name, kind, _, reference_images):
    """The hazard trials (bench/gpu_check.py's corruption section) on this GPU: 0 corrupted."""
    if name == "nvimgcodec":
        pytest.importorskip("nvidia.nvimgcodec")
    device = torch.device("cuda")
    options = {"progressive": True} if kind == "progressive" else {}
    jpegs = [_reencoded(p, options) for p in reference_images if p.suffix in (".jpg", ".jpeg", ".png")]
    decoder = DeviceDecoder(
        resolve_weights("resnet18", "none").preprocessing, device, decoders.jpeg_backend(name, device)
    )
    found = hazard.corruption_trials(decoder.decode, device, jpegs, hazard.decoded_sizes(jpegs), trials=100)
    assert found.corrupted == 0, str(found)


@pytest.mark.parametrize("name", ["nvjpeg", "nvimgcodec"])
@pytest.mark.parametrize("_", [pytest.param(None, marks=needs_gpu)])
def test_rows_under_pressure_match_the_cpu_path(name, _, reference_images, resnet18_ckpt):
    """The model actor's GPU path, as the job runs it (two calls in flight, small batches,
    the reference set many times over), row for row against the CPU decode path: cosine
    >= 0.995 and the same top-1 wherever the CPU path's margin is clear. Without the barrier,
    on a GPU with the hazard, freed blocks are rewritten under queued kernels and rows drift."""
    if name == "nvimgcodec":
        pytest.importorskip("nvidia.nvimgcodec")
    resolved = resolve_weights("resnet18", str(resnet18_ckpt))
    paths = np.array([str(p) for p in reference_images], dtype=object)
    on_cpu = DecodeStage(resolved.preprocessing)({"path": paths})
    on_gpu = DecodeStage(resolved.preprocessing, handoff=JpegHandoff(0.0))({"path": paths})
    predictor = Predictor(
        InferenceSettings(weights=resolved, precision="fp32", top_k=2, device="cuda", gpu_decoder=name),
        schema=OutputColumns(512).schema(),
    )
    want = {r["path"]: r for r in predictor(dict(on_cpu)).to_pylist()}
    batches = [_slice(on_gpu, start, 3) for start in range(0, len(paths), 3)] * 40
    got: list[dict] = []
    lock = threading.Lock()

    def call(mine):
        for batch in mine:
            rows = predictor(batch).to_pylist()
            with lock:
                got.extend(rows)

    threads = [threading.Thread(target=call, args=(batches[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 40 * len(paths)
    for row in got:
        ref = want[row["path"]]
        cosine = torch.nn.functional.cosine_similarity(
            torch.tensor(row["embedding"]), torch.tensor(ref["embedding"]), dim=0
        )
        assert row["error"] is None and cosine >= 0.995, (row["path"], float(cosine))
        if ref["topk_probs"][0] - ref["topk_probs"][1] > 0.05:
            assert row["topk_ids"][0] == ref["topk_ids"][0], row["path"]


def _slice(batch: dict, start: int, n: int) -> dict:
    return {k: v[start : start + n] for k, v in batch.items()}


def _reencoded(path, options: dict) -> bytes:
    buf = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(buf, format="JPEG", quality=90, **options)
    return buf.getvalue()
