"""--cpu-decode-share auto: the share where a node's cores and its GPU keep up with each
other, from the seconds both report (run/progress/decode_share.py), and the data path's overlap
with the forward in the model actor (device/feed.py), with a fake decoder and model."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from resnet_batch.core.columns import OutputColumns
from resnet_batch.core.reporting import BatchTimes
from resnet_batch.data.decode import JPEG_COLUMN, PIXELS_COLUMN
from resnet_batch.device.decoders import DeviceCrops
from resnet_batch.model.inference import Predictor
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights
from resnet_batch.run.progress.decode_share import INITIAL_SHARE, DecodeShare


def balanced(share: float, cores: int, forward: float, device: float, cpu: float) -> tuple[float, float]:
    """(images/s the GPU keeps up with, images/s the cores do) at `share`."""
    return 1 / (forward + (1 - share) * device), cores / (share * cpu) if share else float("inf")


def test_the_share_is_where_cores_and_gpu_meet():
    share = DecodeShare(cores=15)
    assert share.share() == INITIAL_SHARE  # nothing measured yet
    share.add_device_times(BatchTimes(device_decoded=200, data_path_s=200 * 134e-6, images=256, forward_s=256 * 80e-6))
    assert share.share() == INITIAL_SHARE  # the cores have not reported
    share.add_cpu_decode(images=100, seconds=100 * 5e-3)
    gpu, cpu = balanced(share.share(), 15, 80e-6, 134e-6, 5e-3)
    assert 0 < share.share() < 1 and gpu == pytest.approx(cpu, rel=1e-6)
    # Few slow cores: the GPU decodes nearly everything; many fast ones: they take all of it.
    few, many = DecodeShare(cores=1), DecodeShare(cores=64)
    for s in (few, many):
        s.add_device_times(BatchTimes(256, 256 * 50e-6, 256, 256 * 80e-6))
        s.add_cpu_decode(10, 10 * (20e-3 if s is few else 1e-3))
    assert few.share() < 0.01 and many.share() == 1.0
    assert DecodeShare(cores=4, fixed=0.3).share() == 0.3


def test_the_share_follows_the_images():
    """Older reports weigh less: when images get cheaper to decode on the cores, the share grows."""
    share = DecodeShare(cores=8)
    share.add_device_times(BatchTimes(256, 256 * 100e-6, 256, 256 * 80e-6))
    share.add_cpu_decode(100, 100 * 10e-3)
    before = share.share()
    for _ in range(100):
        share.add_cpu_decode(100, 100 * 2e-3)
    assert share.share() > 2 * before


class Intervals:
    def __init__(self):
        self.lock = threading.Lock()
        self.spans: dict[str, list[tuple[float, float]]] = {"decode": [], "forward": []}

    def timed(self, kind: str, seconds: float):
        start = time.monotonic()
        time.sleep(seconds)
        with self.lock:
            self.spans[kind].append((start, time.monotonic()))


def test_a_batch_decodes_while_the_one_before_runs_its_forward():
    """Two calls at once, as a GPU actor runs them: one data path at a time, each beside the
    other call's forward (never one after the other for the whole run)."""
    crop = 224
    predictor = Predictor(
        InferenceSettings(weights=resolve_weights("resnet18", "none"), top_k=1, device="cpu"),
        schema=OutputColumns(512).schema(),
    )
    seen = Intervals()

    def fake_decoder(jpegs):
        seen.timed("decode", 0.15)
        return DeviceCrops(torch.zeros((len(jpegs), 3, crop, crop), dtype=torch.uint8), list(range(len(jpegs))), {})

    def fake_forward(images, resized=None):
        seen.timed("forward", 0.15)
        n = len(images)
        return {"embedding": torch.zeros((n, 512)), "logits": torch.zeros((n, 1000))}

    setattr(predictor.feed, "decoder", fake_decoder)  # noqa: B010 (the fake is no DeviceDecoder)
    predictor.network.forward = fake_forward
    batch = {
        "path": np.array([f"{i}.jpg" for i in range(4)], dtype=object),
        "error": np.array([""] * 4, dtype=object),
        "width": np.full(4, 8, np.int32),
        "height": np.full(4, 8, np.int32),
        JPEG_COLUMN: np.array([b"jpeg"] * 4, dtype=object),
        PIXELS_COLUMN: np.array([b""] * 4, dtype=object),
    }
    calls = [threading.Thread(target=lambda: [predictor(dict(batch)) for _ in range(3)]) for _ in range(2)]
    for call in calls:
        call.start()
    for call in calls:
        call.join()
    decodes, forwards = sorted(seen.spans["decode"]), seen.spans["forward"]
    assert len(decodes) == len(forwards) == 6
    assert all(
        a_end <= b_start for (_, a_end), (b_start, _) in zip(decodes, decodes[1:], strict=False)
    )  # one at a time
    overlapped = sum(any(d0 < f1 and f0 < d1 for f0, f1 in forwards) for d0, d1 in decodes)
    assert overlapped >= 4, (decodes, forwards)
