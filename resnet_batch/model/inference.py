"""Model stage: uint8 image batches -> top-k labels, pooled embeddings and stage features, one pass.

Normalisation happens here, on the model's device, so only uint8 crosses process and
PCIe boundaries. A batch that runs out of GPU memory is split in halves and retried.
With --crop none, images arrive padded to a few shapes: each shape is one forward, the
padding is zeroed after normalisation and left out of every average.
"""

from __future__ import annotations

import logging
import threading
import uuid
import warnings
from contextlib import nullcontext

import numpy as np
import pyarrow as pa
import torch

from ..core.columns import (
    ENTROPY,
    ERROR,
    IMAGE,
    MARGIN,
    NEEDS_REVIEW,
    SCALE,
    SPATIAL_SHAPE,
    TOPK_IDS,
    TOPK_PROBS,
    VALID,
    spatial_column,
)
from ..data.decode import JPEG_COLUMN, PIXELS_COLUMN, RESIZED_COLUMNS
from ..data.device_decode import DeviceDecoder
from .models import build_model, fold_batch_norms, forward_stages, pool
from .outputs import empty_outputs, finished_table
from .registry import POOLED, STAGE_STRIDES, STAGES, column_of
from .settings import InferenceSettings, resolve_precision

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but this worker has no usable CUDA GPU")
    return device


class Predictor:
    """One model replica: what each model actor runs (actor.PredictorActor)."""

    def __init__(self, settings: InferenceSettings, schema: pa.Schema, progress=None):
        self.settings = settings
        self.schema = schema
        self.progress = progress  # a progress.ProgressCounter actor, told of each batch, if any
        self.device = torch.device(resolve_device(settings.device))
        self.precision = resolve_precision(settings.precision, self.device.type)
        torch.set_num_threads(max(1, settings.threads))  # also what threads started later get
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        model = fold_batch_norms(build_model(settings.weights)).to(self.device)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        needed = [len(STAGES) if f == POOLED else STAGES.index(f) + 1 for f in settings.features]
        needed += [STAGES.index(settings.spatial) + 1] if settings.spatial else []
        self.deepest = max(needed, default=len(STAGES))  # the forward stops after this layer
        self.forward = torch.compile(self._forward_raw) if settings.compile else self._forward_raw
        # Actors run several calls at once (pipeline.model_pool). On a GPU each call has a CUDA
        # stream of its thread, so one batch's decode, copy in and results out overlap
        # another's forward. Eager forwards run unlocked; a compiled one is not thread-safe.
        # (torchvision's nvJPEG decoder serialises its own calls.)
        self._thread = threading.local()
        self._launch_lock = threading.Lock() if settings.compile else nullcontext()
        prep = settings.weights.preprocessing
        self.device_decoder = DeviceDecoder(prep, self.device) if prep.resizes_on_device else None
        self.mean = torch.tensor(prep.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std, device=self.device).view(1, 3, 1, 1)
        self.embedding_dtype = np.dtype(settings.embedding_dtype)  # "float32" | "float16"
        log.info("model %s on %s, precision %s", settings.weights.model, self.device, self.precision)
        if progress is not None:
            progress.actor_ready.remote(uuid.uuid4().hex, self.resolved())

    def resolved(self) -> dict:
        """What this replica runs with, for the run's metadata: "auto" as it came out here."""
        import torchvision

        # Plain str: torch.__version__ is a TorchVersion, whose unpickling would import torch in the driver.
        return {"device": self.device.type, "precision": self.precision, "torch": str(torch.__version__),
                "torchvision": str(torchvision.__version__),
                "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None}

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

    def to_device(self, images: np.ndarray) -> torch.Tensor:
        with warnings.catch_warnings():
            # Batches arrive read-only (zero-copy from Arrow); they are only read, never written.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(np.ascontiguousarray(images))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    @torch.inference_mode()
    def device_images(self, batch: dict[str, np.ndarray], errors: np.ndarray) -> torch.Tensor:
        """--decode gpu: the batch's uint8 crops on the device, from the JPEG bytes the decode
        stage passed on (decoded here) and the crops it made itself (copied in)."""
        crop = self.settings.weights.preprocessing.crop_size
        images = torch.zeros((len(errors), 3, crop, crop), dtype=torch.uint8, device=self.device)
        local = [i for i, pixels in enumerate(batch[PIXELS_COLUMN]) if pixels]
        if local:
            pixels = np.stack([np.frombuffer(batch[PIXELS_COLUMN][i], np.uint8) for i in local])
            images[self._index(local)] = self.to_device(pixels.reshape(-1, 3, crop, crop))
        jpeg_rows = [i for i, data in enumerate(batch[JPEG_COLUMN]) if data]
        if jpeg_rows:
            decoded = self.device_decoder([batch[JPEG_COLUMN][i] for i in jpeg_rows])
            for k, error in decoded.errors.items():
                errors[jpeg_rows[k]] = error
            if decoded.ok:
                images[self._index([jpeg_rows[k] for k in decoded.ok])] = decoded.crops
        return images

    def _index(self, rows) -> torch.Tensor:
        return torch.tensor(rows, device=self.device)

    @torch.inference_mode()
    def run_model(self, images: np.ndarray | torch.Tensor, resized: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Outputs on the CPU for a uint8 (N, 3, H, W) batch, splitting on OOM."""
        tensor = images if isinstance(images, torch.Tensor) else self.to_device(images)
        sizes = None if resized is None else torch.from_numpy(np.asarray(resized, dtype=np.int64)).to(self.device)
        try:
            with self._launch_lock:
                out = self.forward(tensor, sizes)
            return {name: value.cpu() for name, value in out.items()}
        except torch.OutOfMemoryError:
            if len(images) <= 1:
                raise
            del tensor
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(images) // 2
            log.warning("out of memory on a batch of %d; retrying as two halves", len(images))
            halves = [self.run_model(images[s], None if resized is None else resized[s])
                      for s in (slice(0, half), slice(half, None))]
            return {name: torch.cat([halves[0][name], halves[1][name]]) for name in halves[0]}

    def predict(self, images, resized: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Output columns as numpy arrays: topk_ids, topk_probs, embedding, c2..c5, spatial."""
        out = self.run_model(images, resized)
        result = {name: value.numpy().astype(self.embedding_dtype) for name, value in out.items()
                  if name not in ("logits", "spatial")}
        if "spatial" in out:
            result["spatial"] = out["spatial"].numpy()
        if "logits" in out:
            result.update(self._labels(torch.softmax(out["logits"], dim=1)))
        return result

    def _labels(self, probs: torch.Tensor) -> dict[str, np.ndarray]:
        """Top-k and the review columns from the full softmax."""
        top, ids = probs.topk(self.settings.top_k, dim=1)
        best_two = probs.topk(min(2, probs.shape[1]), dim=1).values
        second = best_two[:, 1] if best_two.shape[1] > 1 else torch.zeros_like(best_two[:, 0])
        result = {
            TOPK_IDS: ids.numpy().astype(np.int32),
            TOPK_PROBS: top.numpy(),
            MARGIN: (best_two[:, 0] - second).numpy(),
            ENTROPY: torch.special.entr(probs).sum(1).numpy(),  # nats; 0 = certain
        }
        if self.settings.review_below is not None:
            result[NEEDS_REVIEW] = (best_two[:, 0] < self.settings.review_below).numpy()
        return result

    def _stream(self):
        """This thread's CUDA stream as the current one (nothing to do on CPU)."""
        if self.device.type != "cuda":
            return nullcontext()
        if not hasattr(self._thread, "stream"):
            self._thread.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self._thread.stream)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        with self._stream():
            return self._label(batch)

    def _label(self, batch: dict[str, np.ndarray]) -> pa.Table:
        errors = np.array(batch[ERROR], dtype=object)
        outputs = empty_outputs(self.settings, len(errors))
        if self.settings.whole_image:
            self._label_shapes(batch, errors, outputs)
        else:
            images = self.device_images(batch, errors) if JPEG_COLUMN in batch else self.to_device(batch[IMAGE])
            ok = np.flatnonzero([not e for e in errors])
            if len(ok):
                self._scatter(outputs, ok, self.predict(images[self._index(ok)]))
        return finished_table(self.settings, self.schema, batch, errors, outputs, self.progress)

    def _label_shapes(self, batch: dict[str, np.ndarray], errors: np.ndarray, outputs: dict) -> None:
        """--crop none: one forward per padded shape in the batch (rows arrive ordered by shape)."""
        images = batch[IMAGE]
        resized = np.stack([batch[RESIZED_COLUMNS[0]], batch[RESIZED_COLUMNS[1]]], axis=1)
        by_shape: dict[tuple, list[int]] = {}
        for i in np.flatnonzero([not e for e in errors]):
            by_shape.setdefault(images[i].shape, []).append(i)
        for rows in by_shape.values():
            rows = np.array(rows)
            stacked = np.stack([images[i] for i in rows])
            self._scatter(outputs, rows, self.predict(stacked, resized[rows]), resized[rows])
        outputs[SCALE] = batch[SCALE]

    def _scatter(self, outputs: dict, rows: np.ndarray, result: dict[str, np.ndarray],
                 resized: np.ndarray | None = None) -> None:
        """Put a forward's results for `rows` into the batch's output arrays."""
        for name, values in result.items():
            if name != "spatial":
                outputs[name][rows] = values
        if "spatial" not in result:
            return
        maps, stride = result["spatial"], STAGE_STRIDES[self.settings.spatial]
        column = outputs[spatial_column(self.settings.spatial)]
        for j, row in enumerate(rows):
            column[row] = maps[j].reshape(-1)  # C-major: (C, H, W) flattened
        outputs[SPATIAL_SHAPE][rows] = maps.shape[1:]
        # Cell (i, j) is centred on pixel (stride * j, stride * i): it is on the image when that is.
        cells = (maps.shape[3], maps.shape[2]) if resized is None else -(-resized // stride)
        outputs[VALID][rows, 2:] = cells
