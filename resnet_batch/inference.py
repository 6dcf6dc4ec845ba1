"""Model stage: uint8 image batches -> top-k labels and pooled embeddings, one forward pass.

Normalisation happens here, on the model's device, so only uint8 crosses process and
PCIe boundaries. A batch that runs out of GPU memory is split in halves and retried.
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from .models import ResolvedWeights, build_model, fold_batch_norms, forward_features
from .decode import JPEG_COLUMN
from .errors import one_line
from .schema import build_table

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

# glibc maps each large block afresh and unmaps it on free, so every forward pass would
# page-fault its activations in again: resnet18 on 2 CPU cores runs ~40% faster without
# that (bench/forward.py), at about the same RSS. The model actor reallocates the same sizes
# every batch: one arena (Ray runs the model on a thread of its own, whose arena would map
# large blocks anyway), never mmap, never trim. Environment, not mallopt(): it must hold
# before any thread of the process has an arena.
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX), where bf16 is fast."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but this worker has no usable CUDA GPU")
    return device


def resolve_precision(precision: str, device: str) -> str:
    if precision != "auto":
        return precision
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


@dataclass(frozen=True)
class InferenceSettings:
    weights: ResolvedWeights
    top_k: int = 5
    embeddings: bool = True
    embedding_dtype: str = "float32"
    device: str = "auto"
    precision: str = "auto"
    # torch intra-op threads per call. CPU actors run one single-threaded call per core at
    # once: ~12% more images/s than one call on all cores, whose OpenMP threads wait for
    # each other at every layer (bench/bench.py --calls 1 --threads 2).
    threads: int = 1
    channels_last: bool = True
    compile: bool = False


class Predictor:
    """Actor-pool callable holding one model replica."""

    def __init__(self, settings: InferenceSettings, schema: pa.Schema, progress=None):
        self.settings = settings
        self.schema = schema
        self.progress = progress  # a progress.ProgressCounter actor told of error rows, if any
        self.device = torch.device(resolve_device(settings.device))
        self.precision = resolve_precision(settings.precision, self.device.type)
        torch.set_num_threads(max(1, settings.threads))  # also what threads started later get
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        model = fold_batch_norms(build_model(settings.weights)).to(self.device)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward = torch.compile(self._forward_raw) if settings.compile else self._forward_raw
        # Actors run several calls at once (pipeline.model_pool). On a GPU each call has a CUDA
        # stream of its thread, so one batch's copy in and results out overlap another's
        # compute; launching GPU work is serialised (torch.compile and the nvJPEG decoder are
        # not thread-safe), and a launch returns before the GPU work ends, so the lock is
        # brief. Uncompiled CPU calls are independent single-threaded forwards, run unlocked.
        self._thread = threading.local()
        serialise = self.device.type == "cuda" or settings.compile
        self._launch_lock = threading.Lock() if serialise else nullcontext()
        prep = settings.weights.preprocessing
        self.mean = torch.tensor(prep.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std, device=self.device).view(1, 3, 1, 1)
        self.categories = settings.weights.categories
        self.embedding_dtype = np.dtype(settings.embedding_dtype)  # "float32" | "float16"
        log.info("model %s on %s, precision %s", settings.weights.model, self.device, self.precision)

    def _forward_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Same ops as torchvision's preset: convert_image_dtype (x/255), then normalize.
        x = images.to(torch.float32).div_(255.0).sub_(self.mean).div_(self.std)
        if self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = AUTOCAST_DTYPES.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            pooled, logits = forward_features(self.model, x)
        return pooled.float(), logits.float()

    def to_device(self, images: np.ndarray) -> torch.Tensor:
        with warnings.catch_warnings():
            # Batches arrive read-only (zero-copy from Arrow); they are only read, never written.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(np.ascontiguousarray(images))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    @torch.inference_mode()
    def decode_on_device(self, images: torch.Tensor, jpegs, errors: np.ndarray) -> None:
        """nvJPEG (torchvision.io) for rows the decode stage left as JPEG bytes, in place.

        Resizing runs on tensors (antialiased), so pixels differ slightly from the PIL
        reference path; the deviation is measured in tests/test_device_decode.py.
        """
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        rows = [i for i, data in enumerate(jpegs) if data]
        if not rows:
            return
        datas = [torch.frombuffer(bytearray(jpegs[i]), dtype=torch.uint8) for i in rows]
        try:
            decoded = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True)
        except RuntimeError:  # one bad file fails the batch call: retry one by one
            decoded = []
            for data in datas:
                try:
                    decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device,
                                               apply_exif_orientation=True))
                except RuntimeError as exc:
                    decoded.append(one_line(exc, 200) or "nvJPEG failed")
        prep = self.settings.weights.preprocessing
        for row, img in zip(rows, decoded):
            if isinstance(img, str):
                errors[row] = f"decode_error: {img}"
                continue
            img = F.resize(img, [prep.resize_size], interpolation=InterpolationMode(prep.interpolation),
                           antialias=True)
            images[row] = F.center_crop(img, [prep.crop_size])

    @torch.inference_mode()
    def run_model(self, images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled, logits) on the CPU for a uint8 (N, 3, H, W) batch, splitting on OOM."""
        tensor = images if isinstance(images, torch.Tensor) else self.to_device(images)
        try:
            with self._launch_lock:
                pooled, logits = self.forward(tensor)
            return pooled.cpu(), logits.cpu()
        except torch.OutOfMemoryError:
            if len(images) <= 1:
                raise
            del tensor
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(images) // 2
            log.warning("out of memory on a batch of %d; retrying as two halves", len(images))
            first, second = self.run_model(images[:half]), self.run_model(images[half:])
            return torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])

    def predict(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(topk_ids, topk_probs, embeddings) as numpy arrays."""
        pooled, logits = self.run_model(images)
        k = self.settings.top_k
        probs, ids = torch.softmax(logits, dim=1).topk(k, dim=1) if k else (logits[:, :0], logits[:, :0])
        return ids.numpy().astype(np.int32), probs.numpy().astype(np.float32), pooled.numpy().astype(self.embedding_dtype)

    def _stream(self):
        """This thread's CUDA stream as the current one (nothing to do on CPU)."""
        if self.device.type != "cuda":
            return nullcontext()
        if not hasattr(self._thread, "stream"):
            self._thread.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self._thread.stream)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        with self._stream():
            table = self._label(batch)
        errors = table.num_rows - table.column("error").null_count
        if errors and self.progress is not None:
            self.progress.add_errors.remote(errors)
        return table

    def _label(self, batch: dict[str, np.ndarray]) -> pa.Table:
        images = self.to_device(batch["image"])
        errors = np.array(batch["error"], dtype=object)
        if JPEG_COLUMN in batch:
            with self._launch_lock:  # nvJPEG's decoder state is shared by the actor's threads
                self.decode_on_device(images, batch[JPEG_COLUMN], errors)
        ok = np.array([not e for e in errors], dtype=bool)
        n, k, dim = len(images), self.settings.top_k, self.settings.weights.embedding_dim
        ids = np.zeros((n, k), dtype=np.int32)
        probs = np.zeros((n, k), dtype=np.float32)
        emb = np.zeros((n, dim), dtype=self.embedding_dtype)
        if ok.any():
            ids[ok], probs[ok], emb[ok] = self.predict(images[torch.from_numpy(ok).to(images.device)])
        return build_table(self.schema, {**batch, "error": errors}, ids, probs, self.categories, emb)
