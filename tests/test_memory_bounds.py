"""Memory bounded per input, per decode task and per batch, before anything is allocated:
a file's bytes, a 16- or 32-bit image's samples, the images a decode task holds at once,
and a model actor's batches against what a node gives Ray."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.config.plan import Cluster, make_plan
from resnet_batch.core.errors import UsageError
from resnet_batch.core.storage import TooManyBytes, read_bytes_or_raise
from resnet_batch.data.decode import DecodeStage, ImageError, decode_rgb
from resnet_batch.data.limits import DecodeMemory, decode_bytes
from resnet_batch.model.weights import resolve_weights

GiB = 2**30


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_a_file_is_never_read_past_the_byte_limit(tmp_path):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(8 * GiB)  # sparse: what a read of it whole would cost is 8 GiB of memory
    with pytest.raises(TooManyBytes, match="holds 8589934592 bytes"):
        read_bytes_or_raise(str(big), limit=512 * 2**20)
    stage = DecodeStage(resolve_weights("resnet18", "none").preprocessing, max_bytes=2**20)
    out = stage({"path": np.array([str(big)], dtype=object)})
    assert out["error"][0] == "too_large: the file holds 8589934592 bytes than --max-bytes 1048576 allows"


def test_a_stream_is_read_no_further_than_the_limit():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/limits/big.jpg", b"x" * 5000)
    with pytest.raises(TooManyBytes, match="holds more than 4096 bytes"):
        read_bytes_or_raise("memory://limits/big.jpg", limit=4096)
    assert len(read_bytes_or_raise("memory://limits/big.jpg", limit=5000)) == 5000


@pytest.mark.parametrize(
    "array, mode, weight",
    [
        (np.zeros((200, 300), np.uint16), "I;16", 2),
        (np.zeros((200, 300), np.int32), "I", 4),
        (np.zeros((200, 300), np.float32), "F", 4),
        (np.zeros((200, 300, 3), np.uint8), "RGB", 1),
    ],
)
def test_the_pixel_limit_counts_bytes_per_sample(array, mode, weight):
    image = Image.fromarray(array)
    assert image.mode == mode
    buf = io.BytesIO()
    image.save(buf, format="TIFF")
    data = buf.getvalue()
    assert decode_rgb(data, max_pixels=60_000 * weight).size == (300, 200)
    with pytest.raises(ImageError, match="too_large") as refused:
        decode_rgb(data, max_pixels=60_000 * weight - 1)
    if weight > 1:
        assert f"of {8 * weight}-bit samples ({mode}) count as {60_000 * weight} 8-bit pixels" in str(refused.value)


def test_a_16_bit_grey_still_spans_the_full_range():
    ramp = np.linspace(0, 65535, 300 * 700, dtype=np.float64).reshape(700, 300).astype(np.uint16)
    rgb = np.asarray(decode_rgb(_png(ramp), max_pixels=10**8))
    want = np.clip(np.rint(ramp.astype(np.float64) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], want) and np.array_equal(rgb[..., 2], want)


def test_a_decode_task_holds_its_budget_or_one_image():
    memory = DecodeMemory(limit=100)
    held, peak, lock = [], [0], threading.Lock()

    def decode(size: int) -> None:
        with memory.holding(size):
            with lock:
                held.append(size)
                peak[0] = max(peak[0], memory.held)
            threading.Event().wait(0.01)  # an image being decoded, for a moment

    threads = [threading.Thread(target=decode, args=(size,)) for size in [60, 30, 30, 150, 10, 60] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == 18 and memory.held == 0
    assert peak[0] == 150 or peak[0] <= 100, peak  # the budget, or the one image larger than it alone
    assert decode_bytes(10_000, 10_000, "I;16") == 10_000 * 10_000 * 6


RESOLVED = resolve_weights("resnet18", "none")
CFG = LabelConfig.of(inputs=("x",), output="y", model="resnet18", weights="none", precision="fp32")
NODE = Cluster(gpus=0, cpu_nodes=1, cpus_per_node=2, cpu_bf16=False, memory_per_node=16 * GiB)


def test_a_batch_that_cannot_fit_is_refused_saying_what_fits():
    with pytest.raises(UsageError) as refused:
        make_plan(CFG.replace(batch_size=4096), RESOLVED, NODE)
    message = str(refused.value)
    assert message.startswith("--batch-size 4096 cannot fit: 2 calls at once of 4096 resnet18 images")
    fits = int(message.split("use --batch-size ")[1].split(" ")[0])
    assert 500 < fits < 2048
    make_plan(CFG.replace(batch_size=fits), RESOLVED, NODE)  # what it names fits
    assert "memory: each model actor ~" in "\n".join(make_plan(CFG, RESOLVED, NODE).lines())


def test_a_resize_no_batch_can_hold_is_refused():
    with pytest.raises(UsageError, match="use a smaller --resize"):
        make_plan(CFG.replace(crop="none", resize=7071, batch_size=32), RESOLVED, NODE)
    plan = make_plan(CFG.replace(crop="none", resize=512, batch_size=8), RESOLVED, NODE)
    assert plan.memory is not None and plan.memory.decode_task > GiB


def test_gpu_batches_are_left_to_the_gpu_and_unknown_memory_is_not_guessed():
    gpus = Cluster(gpus=1, cpu_nodes=1, cpus_per_node=8, cpu_bf16=False, gpu_nodes=1, memory_per_node=16 * GiB)
    on_gpus = make_plan(CFG.replace(batch_size=4096, device="auto"), RESOLVED, gpus).memory
    assert on_gpus is not None and on_gpus.per_image == 0
    unknown = Cluster(gpus=0, cpu_nodes=1, cpus_per_node=2, cpu_bf16=False)
    assert make_plan(CFG.replace(batch_size=4096), RESOLVED, unknown).batch_size == 4096
