"""Model stage: uint8 image batches -> top-k labels, pooled embeddings and stage features, one pass.

Normalisation happens here, on the model's device, so only uint8 crosses process and
PCIe boundaries. A batch that runs out of GPU memory is split in halves and retried.
With --crop none, images arrive padded to a few shapes: each shape is one forward, the
padding is zeroed after normalisation and left out of every average.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
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
from ..core.reporting import BatchTimes, ModelReporter
from ..data.decode import JPEG_COLUMN, RESIZED_COLUMNS
from ..device.feed import DeviceFeed, Fed
from ..device.streams import current_stream, timing_event
from .models import build_model, fold_batch_norms, forward_stages, pool
from .outputs import empty_outputs, finished_table
from .phases import PhaseClock
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

    def __init__(
        self,
        settings: InferenceSettings,
        schema: pa.Schema,
        reporter: ModelReporter | None = None,
        clock: PhaseClock | None = None,
    ):
        self.settings = settings
        self.schema = schema
        self.reporter = reporter  # told of each batch, if any
        self.clock = clock or PhaseClock()
        self.actor_id = uuid.uuid4().hex
        self.device = torch.device(resolve_device(settings.device))
        self.precision = resolve_precision(settings.precision, self.device.type)
        torch.set_num_threads(max(1, settings.threads))  # also what threads started later get
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.empty(1, device=self.device)  # the CUDA context, timed on its own
        self.clock.done("CUDA init")
        model = fold_batch_norms(build_model(settings.weights)).to(self.device)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        needed = [len(STAGES) if f == POOLED else STAGES.index(f) + 1 for f in settings.features]
        needed += [STAGES.index(settings.spatial) + 1] if settings.spatial else []
        self.deepest = max(needed, default=len(STAGES))  # the forward stops after this layer
        self.forward = torch.compile(self._forward_raw) if settings.compile else self._forward_raw
        # Actors run several calls at once (pipeline.model_pool), each on a thread and (on a
        # GPU) a CUDA stream of its own; the feed runs their data paths on its stream, so one
        # batch's copy in, decode and resize overlap another's forward (feed.py). Eager
        # forwards run unlocked; a compiled one is not thread-safe.
        self._thread = threading.local()
        self._launch_lock = threading.Lock() if settings.compile else nullcontext()
        prep = settings.weights.preprocessing
        self.feed = DeviceFeed(prep, self.device, settings.gpu_decoder)
        self.mean = torch.tensor(prep.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std, device=self.device).view(1, 3, 1, 1)
        self.embedding_dtype = np.dtype(settings.embedding_dtype)  # "float32" | "float16"
        self.clock.done("build")
        self.warm_up()
        self.clock.done("warm-up")
        log.info(
            "model %s on %s, precision %s; start: %s",
            settings.weights.model,
            self.device,
            self.precision,
            self.clock.report()["seconds"],
        )
        if reporter is not None:
            reporter.actor_ready(self.actor_id, self.resolved(), self.clock.report())

    def warm_up(self) -> None:
        """What the first batch would otherwise wait for, done while the first blocks are read:
        the JPEG path's check (and with it the decoder's handles), cuDNN's autotuning for the
        batch's shape, the allocator's pools."""
        self.check_device_path()
        if self.settings.whole_image:  # shapes vary: nothing to tune ahead
            return
        if self.settings.compile and self.device.type != "cuda":  # a batch of 1 would compile a shape never used
            return
        crop = self.settings.weights.preprocessing.crop_size
        n = self.settings.warmup_batch if self.device.type == "cuda" else 1
        self.run_model(self.feed(np.zeros((n, 3, crop, crop), dtype=np.uint8)).images_on_current_stream())

    def check_device_path(self) -> None:
        """A JPEG path that fails its check is not used: this actor decodes on its CPU, and
        the job is told which actor and why."""
        error = self.feed.check()
        if error is None:
            return
        where = f"{socket.gethostname()} (pid {os.getpid()})"
        log.warning("GPU decoding failed its check on %s: %s; decoding on the CPU instead", where, error)
        if self.reporter is not None:
            self.reporter.device_path_failed(where, error)

    def resolved(self) -> dict:
        """What this replica runs with, for the run's metadata: "auto" as it came out here."""
        import torchvision

        # Plain str: torch.__version__ is a TorchVersion, whose unpickling would import torch in the driver.
        return {
            "device": self.device.type,
            "precision": self.precision,
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
        }

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
        tensor = images if isinstance(images, torch.Tensor) else self.feed.to_device(images)
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

    def _to_host(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The outputs in host memory: copied from the device into pinned memory, then this
        call's stream (alone) waited for."""
        if self.device.type != "cuda":
            return out
        host = {name: value.to("cpu", non_blocking=True) for name, value in out.items()}
        torch.cuda.current_stream(self.device).synchronize()
        return host

    def _stream(self):
        """This thread's CUDA stream as the current one (nothing to do on CPU)."""
        if self.device.type != "cuda":
            return nullcontext()
        if not hasattr(self._thread, "stream"):
            self._thread.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self._thread.stream)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        if self.clock.mark("first block in"):
            log.info("first block in")
        with self._stream():
            table = self._label(batch)
        if self.clock.mark("first forward out") and self.reporter is not None:
            self.reporter.actor_ready(self.actor_id, self.resolved(), self.clock.report())
        return table

    def _label(self, batch: dict[str, np.ndarray]) -> pa.Table:
        errors = np.array(batch[ERROR], dtype=object)
        outputs = empty_outputs(self.settings, len(errors))
        if self.settings.whole_image:
            self._label_shapes(batch, errors, outputs)
        else:
            fed = self.feed(batch, errors) if JPEG_COLUMN in batch else self.feed(batch[IMAGE])
            images = fed.images_on_current_stream()
            ok = np.flatnonzero([not e for e in errors])
            if len(ok):
                started, clock = self._event(), time.perf_counter()
                self._scatter(
                    outputs, ok, self.predict(images if len(ok) == len(errors) else images[self.feed.index(ok)])
                )
                self._report_times(fed, len(ok), started, time.perf_counter() - clock)
        return finished_table(self.settings, self.schema, batch, errors, outputs, self.reporter)

    def _event(self) -> torch.cuda.Event | None:
        """A timing event on this call's stream (None on a CPU)."""
        return timing_event(current_stream(self.device))

    def _report_times(self, fed: Fed, images: int, started: torch.cuda.Event | None, wall_s: float) -> None:
        """The batch's device seconds (data path, forward) to the counter, which sets the CPU
        decode share from them. The forward is done: its outputs are in host memory."""
        if self.reporter is None:
            return
        forward_s = wall_s
        ended = self._event() if started is not None else None
        if started is not None and ended is not None:
            ended.synchronize()
            forward_s = started.elapsed_time(ended) / 1000
        self.reporter.batch_times(BatchTimes(fed.device_decoded, fed.data_path_s(), images, forward_s))

    def _label_shapes(self, batch: dict[str, np.ndarray], errors: np.ndarray, outputs: dict) -> None:
        """--crop none: one forward per padded shape in the batch (rows arrive ordered by shape)."""
        images = batch[IMAGE]
        resized = np.stack([batch[RESIZED_COLUMNS[0]], batch[RESIZED_COLUMNS[1]]], axis=1)
        by_shape: dict[tuple, list[int]] = {}
        for i in np.flatnonzero([not e for e in errors]):
            by_shape.setdefault(images[i].shape, []).append(i)
        for shape_rows in by_shape.values():
            rows = np.array(shape_rows)
            stacked = np.stack([images[i] for i in rows])
            self._scatter(outputs, rows, self.predict(stacked, resized[rows]), resized[rows])
        outputs[SCALE] = batch[SCALE]

    def _scatter(
        self, outputs: dict, rows: np.ndarray, result: dict[str, np.ndarray], resized: np.ndarray | None = None
    ) -> None:
        """Put a forward's results for `rows` into the batch's output arrays."""
        for name, values in result.items():
            if name != "spatial":
                outputs[name][rows] = values
        stage = self.settings.spatial
        if "spatial" not in result or stage is None:
            return
        maps, stride = result["spatial"], STAGE_STRIDES[stage]
        column = outputs[spatial_column(stage)]
        for j, row in enumerate(rows):
            column[row] = maps[j].reshape(-1)  # C-major: (C, H, W) flattened
        outputs[SPATIAL_SHAPE][rows] = maps.shape[1:]
        # Cell (i, j) is centred on pixel (stride * j, stride * i): it is on the image when that is.
        cells = (maps.shape[3], maps.shape[2]) if resized is None else -(-resized // stride)
        outputs[VALID][rows, 2:] = cells
