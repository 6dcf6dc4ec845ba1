"""The class Ray Data starts as a model actor.

It imports inference.py, and with it torch and torchvision, only once it is constructed in
the actor: the driver runs no model and never imports torch (seconds of a core while Ray
and the actors start).
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pyarrow as pa

from ..core.errors import ModelStartError, UsageError, WeightsUnavailableError, one_line
from ..core.reporting import ModelReporter
from .phases import PhaseClock
from .registry import NULL_MODEL
from .settings import InferenceSettings

# Raised as they are: the driver can unpickle these without torch.
OWN_ERRORS = (UsageError, WeightsUnavailableError)


class PredictorActor:
    """An inference.Predictor (null.NullPredictor for --model none), built where the actor runs.
    A constructor that fails tells the reporter why, as a typed error the driver then raises (Ray keeps only the
    traceback's text of a failed actor constructor)."""

    def __init__(self, settings: InferenceSettings, schema: pa.Schema, reporter: ModelReporter | None = None):
        clock = PhaseClock()
        if reporter is not None:  # it holds its CPU (and GPU) from now: the job is not waiting for them
            reporter.actor_placed(f"{socket.gethostname()}:{os.getpid()}")
        try:
            predictor_class = _predictor_class(settings)
            clock.done("imports")
            self.predictor = predictor_class(settings, schema, reporter, clock)
        except Exception as exc:
            failure = (
                exc
                if isinstance(exc, OWN_ERRORS)
                else ModelStartError(f"the model actors could not start: {type(exc).__name__}: {one_line(exc)}")
            )
            if reporter is not None:
                reporter.start_failed(failure)
            raise failure from exc

    def __call__(self, batch: dict[str, np.ndarray]):
        return self.predictor(batch)


def _predictor_class(settings: InferenceSettings) -> type:
    """The null model's predictor (no torch), or the network's (imports torch and torchvision)."""
    if settings.weights.model == NULL_MODEL:
        from .null import NullPredictor

        return NullPredictor
    from .inference import Predictor

    return Predictor
