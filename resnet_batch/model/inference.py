"""Model stage: what a model actor runs on each block. A block's images reach the device
through the feed (copied in, or decoded there), the network labels them, and the block
leaves as a finished table; the reporter hears of each batch.

With --crop none, images arrive padded to a few shapes: each shape is one forward.
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

from ..core.columns import ERROR, IMAGE, SCALE, SPATIAL_SHAPE, VALID, spatial_column
from ..core.reporting import BatchTimes, ModelReporter
from ..data.decode import JPEG_COLUMN, RESIZED_COLUMNS
from ..device.feed import DeviceFeed, Fed
from ..device.streams import current_stream, timing_event
from .network import Network, resolve_device
from .outputs import empty_outputs, finished_table
from .phases import PhaseClock
from .registry import STAGE_STRIDES, map_cells
from .settings import InferenceSettings

log = logging.getLogger(__name__)


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
        self.device = start_device(settings, self.clock)
        self.network = Network(settings, self.device)
        # Actors run several calls at once (pipeline.model_pool), each on a thread and (on a
        # GPU) a CUDA stream of its own; the feed runs their data paths on its stream, so one
        # batch's copy in, decode and resize overlap another's forward (feed.py).
        self._thread = threading.local()
        self.feed = DeviceFeed(settings.weights.preprocessing, self.device, settings.gpu_decoder)
        self.clock.done("build")
        self.warm_up()
        self.clock.done("warm-up")
        log.info(
            "model %s on %s, precision %s; start: %s",
            settings.weights.model,
            self.device,
            self.network.precision,
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
        self.network.run_model(self.feed(np.zeros((n, 3, crop, crop), dtype=np.uint8)).images_on_current_stream())

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
            "precision": self.network.precision,
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
        }

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
                    outputs, ok, self.network.predict(images if len(ok) == len(errors) else images[self.feed.index(ok)])
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
            self._scatter(outputs, rows, self.network.predict(stacked, resized[rows]), resized[rows])
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
        cells = (maps.shape[3], maps.shape[2]) if resized is None else map_cells(resized, stride)
        outputs[VALID][rows, 2:] = cells


def start_device(settings: InferenceSettings, clock: PhaseClock) -> torch.device:
    """The actor's device, its torch threads and (on a GPU) the CUDA context, timed on its own."""
    device = torch.device(resolve_device(settings.device))
    torch.set_num_threads(max(1, settings.threads))  # also what threads started later get
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.empty(1, device=device)
    clock.done("CUDA init")
    return device
