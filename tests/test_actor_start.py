"""A model actor that cannot start says why, as a typed error the driver raises: it raises
it, and tells its reporter (in-process here: the run's reporter is the counter actor's)."""

from __future__ import annotations

import socket

import pytest

from resnet_batch.core.columns import OutputColumns
from resnet_batch.core.errors import ModelStartError, WeightsUnavailableError
from resnet_batch.model.actor import PredictorActor
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights

from .helpers import RecordingReporter


def test_a_foreign_error_becomes_a_model_start_error_told_to_the_reporter():
    reporter = RecordingReporter()
    # A stage the model does not have: the predictor's constructor raises a plain ValueError.
    settings = InferenceSettings(weights=resolve_weights("resnet18", "none"), features=("c9",), device="cpu")
    with pytest.raises(
        ModelStartError,
        match=r"^the model actors could not start: ValueError: tuple\.index\(x\): "
        r"x not in tuple$",
    ):
        PredictorActor(settings, OutputColumns(512).schema(), reporter)
    ((placed,),), ((told,),) = reporter.named("actor_placed"), reporter.named("start_failed")
    assert placed.startswith(socket.gethostname() + ":")
    assert isinstance(told, ModelStartError) and "x not in tuple" in str(told)


def test_our_own_errors_travel_as_they_are(tmp_path):
    checkpoint = tmp_path / "gone.pth"
    checkpoint.write_bytes(b"not a checkpoint")
    resolved = resolve_weights("resnet18", "none")
    broken = InferenceSettings(
        weights=resolved.__class__(**{**resolved.__dict__, "source": _checkpoint_source(str(checkpoint))})
    )
    reporter = RecordingReporter()
    with pytest.raises(WeightsUnavailableError):
        PredictorActor(broken, OutputColumns(512).schema(), reporter)
    ((told,),) = reporter.named("start_failed")
    assert isinstance(told, WeightsUnavailableError)


def test_the_counter_keeps_the_first_failure(ray_local):
    """What the driver asks after a failed start: the counter actor behind the reporter."""
    from resnet_batch.run.progress.counter import CounterClient, CounterReports

    client = CounterClient()
    reports = CounterReports(client.actor)
    reports.start_failed(ModelStartError("first"))
    reports.start_failed(ModelStartError("second"))
    assert str(client.start_failure()) == "first"
    client.close()


def _checkpoint_source(uri: str):
    from resnet_batch.model.weights import weights_source

    return weights_source("resnet18", uri)
