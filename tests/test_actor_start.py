"""A model actor that cannot start says why, as a typed error the driver raises."""

from __future__ import annotations

import pytest

from resnet_batch.core.columns import output_schema
from resnet_batch.core.errors import ModelStartError, WeightsUnavailableError
from resnet_batch.model.actor import PredictorActor
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights


def test_a_foreign_error_becomes_a_model_start_error_told_to_the_counter(ray_local):
    from resnet_batch.run.progress import ProgressCounter

    counter = ProgressCounter.remote()
    # A stage the model does not have: the predictor's constructor raises a plain ValueError.
    settings = InferenceSettings(weights=resolve_weights("resnet18", "none"), features=("c9",), device="cpu")
    with pytest.raises(ModelStartError, match=r"^the model actors could not start: ValueError: tuple\.index\(x\): "
                                              r"x not in tuple$"):
        PredictorActor(settings, output_schema(512), counter)
    told = ray_local.get(counter.why_start_failed.remote())
    assert isinstance(told, ModelStartError) and "x not in tuple" in str(told)


def test_our_own_errors_travel_as_they_are(ray_local, tmp_path):
    from resnet_batch.run.progress import ProgressCounter

    checkpoint = tmp_path / "gone.pth"
    checkpoint.write_bytes(b"not a checkpoint")
    resolved = resolve_weights("resnet18", "none")
    broken = InferenceSettings(weights=resolved.__class__(**{**resolved.__dict__,
                                                             "source": _checkpoint_source(str(checkpoint))}))
    counter = ProgressCounter.remote()
    with pytest.raises(WeightsUnavailableError):
        PredictorActor(broken, output_schema(512), counter)
    assert isinstance(ray_local.get(counter.why_start_failed.remote()), WeightsUnavailableError)


def _checkpoint_source(uri: str):
    from resnet_batch.model.weights import weights_source

    return weights_source("resnet18", uri)
