"""The null model (`--model none`), a benchmark aid: no network and no torch. Every readable
image gets a row with the same columns a resnet50 run writes, holding constant values, so
that a job measures what the pipeline itself costs: listing, decoding, moving, writing.

RESNET_BATCH_NULL_BATCH_SECONDS, where the model actors run, makes each batch take that
long (asleep, using no CPU): a stand-in for a model of a given speed, to see how the
pipeline behaves around it, and a job that is slow by construction wherever it runs."""

from __future__ import annotations

import math
import os
import time
import uuid

import numpy as np
import pyarrow as pa

from ..core.columns import (
    ENTROPY,
    ERROR,
    NEEDS_REVIEW,
    SCALE,
    SPATIAL_SHAPE,
    TOPK_IDS,
    TOPK_PROBS,
    VALID,
    spatial_column,
)
from ..core.reporting import ModelReporter
from ..data.decode import RESIZED_COLUMNS
from .outputs import empty_outputs, finished_table
from .phases import PhaseClock
from .registry import STAGE_STRIDES, map_cells, stage_width
from .settings import InferenceSettings

RAN = {"device": "cpu", "precision": "none", "torch": "none", "torchvision": "none", "gpu": None}
BATCH_SECONDS_VARIABLE = "RESNET_BATCH_NULL_BATCH_SECONDS"


def batch_seconds() -> float:
    """What RESNET_BATCH_NULL_BATCH_SECONDS asks each batch to take (0 when unset)."""
    value = os.environ.get(BATCH_SECONDS_VARIABLE, "")
    try:
        seconds = float(value) if value.strip() else 0.0
    except ValueError:
        raise ValueError(f"{BATCH_SECONDS_VARIABLE} must be a number of seconds, got {value!r}") from None
    if not 0 <= seconds < math.inf:
        raise ValueError(f"{BATCH_SECONDS_VARIABLE} must be a number of seconds >= 0, got {value!r}")
    return seconds


class NullPredictor:
    """What a model actor holds for --model none: a uniform softmax, zero vectors and maps."""

    def __init__(
        self,
        settings: InferenceSettings,
        schema: pa.Schema,
        reporter: ModelReporter | None = None,
        clock: PhaseClock | None = None,
    ):
        self.settings, self.schema, self.reporter = settings, schema, reporter
        self.batch_seconds = batch_seconds()
        if reporter is not None:
            reporter.actor_ready(uuid.uuid4().hex, RAN, clock.report() if clock else None)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        if self.batch_seconds:
            time.sleep(self.batch_seconds)
        errors = np.array(batch[ERROR], dtype=object)
        outputs = self._outputs(batch, np.flatnonzero([not e for e in errors]), len(errors))
        return finished_table(self.settings, self.schema, batch, errors, outputs, self.reporter)

    def _outputs(self, batch: dict, ok: np.ndarray, n: int) -> dict:
        s, classes = self.settings, len(self.settings.weights.categories)
        out = empty_outputs(s, n)
        out[TOPK_IDS][:] = np.arange(s.top_k, dtype=np.int32)
        out[TOPK_PROBS][:] = 1.0 / classes
        out[ENTROPY][:] = math.log(classes)
        if s.review_below is not None:
            out[NEEDS_REVIEW][:] = 1.0 / classes < s.review_below
        if s.spatial:
            self._maps(batch, ok, out)
        if s.whole_image:
            out[SCALE] = batch[SCALE]
        return out

    def _maps(self, batch: dict, ok: np.ndarray, out: dict) -> None:
        """Zero maps of the shapes the model's would have: the crop's, or each image's cells."""
        s, stage = self.settings, self.settings.spatial
        if stage is None:
            return
        stride, channels = STAGE_STRIDES[stage], stage_width(s.weights.model, stage)
        crop = map_cells(s.weights.preprocessing.crop_size, stride)
        column = out[spatial_column(stage)]
        for i in ok:
            if s.whole_image:
                width, height = (map_cells(int(batch[c][i]), stride) for c in RESIZED_COLUMNS)
            else:
                width = height = crop
            column[i] = np.zeros(channels * height * width, np.float16)
            out[SPATIAL_SHAPE][i] = (channels, height, width)
            out[VALID][i] = (0, 0, width, height)
