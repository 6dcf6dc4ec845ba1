"""The class Ray Data starts as a model actor.

It imports inference.py, and with it torch and torchvision, only once it is constructed in
the actor: the driver runs no model and never imports torch (seconds of a core while Ray
and the actors start).
"""

from __future__ import annotations

import os
import socket

from ..core.errors import ModelStartError, UsageError, WeightsUnavailableError, one_line
from .phases import PhaseClock
from .registry import NULL_MODEL
from .settings import InferenceSettings

# Raised as they are: the driver can unpickle these without torch.
OWN_ERRORS = (UsageError, WeightsUnavailableError)


class PredictorActor:
    """An inference.Predictor (null.NullPredictor for --model none), built where the actor runs. A constructor that fails tells
    the progress counter why, as a typed error the driver then raises (Ray keeps only the
    traceback's text of a failed actor constructor)."""

    def __init__(self, settings: InferenceSettings, schema, progress=None):
        clock = PhaseClock()
        if progress is not None:  # it holds its CPU (and GPU) from now: the job is not waiting for them
            progress.actor_placed.remote(f"{socket.gethostname()}:{os.getpid()}")
        try:
            if settings.weights.model == NULL_MODEL:
                from .null import NullPredictor as Predictor
            else:
                from .inference import Predictor
            clock.done("imports")
            self.predictor = Predictor(settings, schema, progress, clock)
        except Exception as exc:
            failure = exc if isinstance(exc, OWN_ERRORS) else ModelStartError(
                f"the model actors could not start: {type(exc).__name__}: {one_line(exc)}")
            if progress is not None:
                progress.start_failed.remote(failure)
            raise failure from exc

    def __call__(self, batch):
        return self.predictor(batch)
