"""The network on its device: a backbone built from its weights, batch norms folded, run in
the job's precision. uint8 batches in; the requested feature columns and the label columns
out, in host memory.

Normalisation happens here, on the model's device, so only uint8 crosses process and
PCIe boundaries. A batch that runs out of GPU memory is split in halves and retried.
Images padded for --crop none have their padding zeroed after normalisation and left out
of every average.
"""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext

import numpy as np
import torch

from ..core.columns import ENTROPY, MARGIN, NEEDS_REVIEW, TOPK_IDS, TOPK_PROBS
from ..device.streams import array_to_device
from .models import fold_batch_norms, forward_stages, pool
from .registry import POOLED, STAGES, column_of
from .settings import InferenceSettings, resolve_precision
from .weights import build_model

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but this worker has no usable CUDA GPU")
    return device


def deepest_layer(settings: InferenceSettings) -> int:
    """How many residual layers the forward runs: the deepest one a requested output reads."""
    needed = [len(STAGES) if f == POOLED else STAGES.index(f) + 1 for f in settings.features]
    needed += [STAGES.index(settings.spatial) + 1] if settings.spatial else []
    return max(needed, default=len(STAGES))


class Network:
    """One replica of the backbone on `device` (the settings' own when not given)."""

    def __init__(self, settings: InferenceSettings, device: torch.device | None = None):
        self.settings = settings
        self.device = device or torch.device(resolve_device(settings.device))
        self.precision = resolve_precision(settings.precision, self.device.type)
        model = fold_batch_norms(build_model(settings.weights)).to(self.device)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.deepest = deepest_layer(settings)
        prep = settings.weights.preprocessing
        self.mean = torch.tensor(prep.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std, device=self.device).view(1, 3, 1, 1)
        self.embedding_dtype = np.dtype(settings.embedding_dtype)  # "float32" | "float16"
        self.forward = torch.compile(self._forward_raw) if settings.compile else self._forward_raw
        # Eager forwards run unlocked from several threads at once; a compiled one is not thread-safe.
        self._launch_lock: threading.Lock | nullcontext = threading.Lock() if settings.compile else nullcontext()

    def _forward_raw(self, images: torch.Tensor, resized: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Output columns (and `logits`) for a uint8 batch; `resized` (N, 2): each image's
        (width, height) inside its padded tensor, for --crop none."""
        # Same ops as torchvision's preset: convert_image_dtype (x/255), then normalize.
        x = images.to(torch.float32).div_(255.0).sub_(self.mean).div_(self.std)
        mask = None
        if resized is not None:
            height, width = x.shape[-2:]
            inside_x = torch.arange(width, device=x.device)[None, :] < resized[:, :1]
            inside_y = torch.arange(height, device=x.device)[None, :] < resized[:, 1:]
            mask = (inside_y[:, None, :, None] & inside_x[:, None, None, :]).to(x.dtype)
            x.mul_(mask)  # padding is 0 after normalisation, as a convolution's own padding
        if self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = AUTOCAST_DTYPES.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            stages, pooled, logits = forward_stages(self.model, x, self.deepest, self.settings.top_k > 0, mask)
            out = {}
            for feature in self.settings.features:
                if feature == POOLED and pooled is not None:  # the classifier's input, already averaged
                    out[column_of(feature)] = pooled.float()
                else:
                    stage = stages[-1 if feature == POOLED else STAGES.index(feature)]
                    out[column_of(feature)] = pool(self.model, stage, mask).float()
        if self.settings.spatial:
            out["spatial"] = stages[STAGES.index(self.settings.spatial)].to(torch.float16)
        if logits is not None:
            out["logits"] = logits.float()
        return out

    @torch.inference_mode()
    def run_model(
        self, images: np.ndarray | torch.Tensor, resized: np.ndarray | None = None
    ) -> dict[str, torch.Tensor]:
        """Outputs on the CPU for a uint8 (N, 3, H, W) batch, splitting on OOM."""
        tensor = images if isinstance(images, torch.Tensor) else array_to_device(images, self.device)
        sizes = None if resized is None else torch.from_numpy(np.asarray(resized, dtype=np.int64)).to(self.device)
        try:
            with self._launch_lock:
                out = self.forward(tensor, sizes)
            return self._to_host(out)
        except torch.OutOfMemoryError:
            if len(images) <= 1:
                raise
            del tensor
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(images) // 2
            log.warning("out of memory on a batch of %d; retrying as two halves", len(images))
            halves = [
                self.run_model(images[s], None if resized is None else resized[s])
                for s in (slice(0, half), slice(half, None))
            ]
            return {name: torch.cat([halves[0][name], halves[1][name]]) for name in halves[0]}

    def predict(self, images: np.ndarray | torch.Tensor, resized: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Output columns as numpy arrays: topk_ids, topk_probs, embedding, c2..c5, spatial."""
        out = self.run_model(images, resized)
        result = {
            name: value.numpy().astype(self.embedding_dtype)
            for name, value in out.items()
            if name not in ("logits", "spatial")
        }
        if "spatial" in out:
            result["spatial"] = out["spatial"].numpy()
        if "logits" in out:
            probs = torch.softmax(out["logits"], dim=1)
            result.update(label_columns(probs, self.settings.top_k, self.settings.review_below))
        return result

    def _to_host(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The outputs in host memory: copied from the device into pinned memory, then this
        call's stream (alone) waited for."""
        if self.device.type != "cuda":
            return out
        host = {name: value.to("cpu", non_blocking=True) for name, value in out.items()}
        torch.cuda.current_stream(self.device).synchronize()
        return host


def label_columns(probs: torch.Tensor, top_k: int, review_below: float | None) -> dict[str, np.ndarray]:
    """Top-k and the review columns from the full softmax."""
    top, ids = probs.topk(top_k, dim=1)
    best_two = probs.topk(min(2, probs.shape[1]), dim=1).values
    second = best_two[:, 1] if best_two.shape[1] > 1 else torch.zeros_like(best_two[:, 0])
    result = {
        TOPK_IDS: ids.numpy().astype(np.int32),
        TOPK_PROBS: top.numpy(),
        MARGIN: (best_two[:, 0] - second).numpy(),
        ENTROPY: torch.special.entr(probs).sum(1).numpy(),  # nats; 0 = certain
    }
    if review_below is not None:
        result[NEEDS_REVIEW] = (best_two[:, 0] < review_below).numpy()
    return result
