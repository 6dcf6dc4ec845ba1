"""The run record: what made an output's rows, in one typed, versioned record with one JSON
form. It is kept whole in `_resnet_batch.json` and in every part file's footer; a resume
compares it with the record of the run it would add to, readers take what made the rows
from it, and the report draws the runs it lists.

Records written by any earlier version read as records: unknown keys are ignored and
missing ones are None, so a reader never fails on an output it can otherwise read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

RECORD_VERSION = 1
_RESOLVED = {"resolved": True}  # what the model actors resolved: kept by a resume that runs no model


@dataclass(frozen=True)
class RunRecord:
    """One run of an output, as readers and resumes see it."""

    # What the settings make of the rows; "resume": the setting that changes this value (a
    # resume with another value is refused, naming it).
    model: str | None = field(default=None, metadata={"resume": "--model"})
    weights: str | None = field(default=None, metadata={"resume": "--weights"})
    weights_source: str | None = None  # none | torchvision | checkpoint | hf
    preprocessing: dict | None = field(
        default=None, metadata={"resume": "preprocessing (--resize, --crop, --weights' recipe)"}
    )
    classes: int | None = None
    labels: str | None = field(default=None, metadata={"resume": "--labels"})
    top_k: int | None = field(default=None, metadata={"resume": "--top-k"})
    embeddings: bool | None = field(default=None, metadata={"resume": "--no-embeddings"})
    embedding_dtype: str | None = field(default=None, metadata={"resume": "--embedding-dtype"})
    embedding_dim: int | None = None
    features: list | None = field(default=None, metadata={"resume": "--features"})
    stage_dims: dict | None = None
    spatial: dict | None = field(default=None, metadata={"resume": "--spatial"})
    review: dict | None = field(default=None, metadata={"resume": "--review-below"})
    extra_columns: list | None = field(default=None, metadata={"resume": "the manifest's columns"})
    # As asked (auto, fp32, ...) until the model actors say what ran.
    precision: str | None = field(default=None, metadata=_RESOLVED)
    package: str | None = None  # resnet-batch
    package_version: str | None = None
    # What ran: each model actor's device, precision and library versions.
    ran: list | None = field(default=None, metadata=_RESOLVED)
    device: str | None = field(default=None, metadata=_RESOLVED)
    versions: dict | None = field(default=None, metadata=_RESOLVED)
    # How the run ended (once it has), and every run of the output, oldest first.
    finished: dict | None = None
    runs: list | None = None
    record_version: int = RECORD_VERSION

    @classmethod
    def from_json(cls, value: object) -> RunRecord | None:
        """The record a JSON object holds (None for anything else)."""
        if not isinstance(value, dict):
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        """The JSON object, without the values no one set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def differences(self, other: RunRecord) -> list[str]:
        """The settings that change the rows in which `other` differs from this record."""
        return [name for name in RESUME_FIELDS if getattr(self, name) != getattr(other, name)]

    def keeping_what_ran(self, earlier: RunRecord | None) -> RunRecord:
        """This record with what earlier runs' model actors resolved: theirs where this run
        ran no model, theirs and this run's together where it did."""
        if earlier is None:
            return self
        if self.ran is None:
            kept = {name: getattr(earlier, name) for name in RESOLVED_FIELDS if getattr(earlier, name) is not None}
            return dataclasses.replace(self, **kept)
        if isinstance(earlier.ran, list):
            return dataclasses.replace(self, ran=earlier.ran + [r for r in self.ran if r not in earlier.ran])
        return self

    def all_runs(self) -> list[dict]:
        """Each run of the output that recorded its end (`finished`), oldest first."""
        if isinstance(self.runs, list):
            return [r for r in self.runs if isinstance(r, dict)]
        return [self.finished] if isinstance(self.finished, dict) else []


RESUME_FIELDS = {f.name: f.metadata["resume"] for f in dataclasses.fields(RunRecord) if "resume" in f.metadata}
RESOLVED_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord) if f.metadata.get("resolved"))


def change_in_words(key: str, was: object, now: object) -> str:
    """ "--review-below was 0.5, now unset": a setting that differs, as the flag that sets it."""
    if key == "preprocessing":
        old, new = (v if isinstance(v, dict) else {} for v in (was, now))
        parts = [
            f"{k} was {_shown(old.get(k))}, now {_shown(new.get(k))}"
            for k in sorted({*old, *new})
            if old.get(k) != new.get(k)
        ]
        return f"{RESUME_FIELDS[key]}: " + ", ".join(parts)
    if key == "review":  # the review columns follow --top-k; --review-below is the setting
        was = was.get("review_below") if isinstance(was, dict) else was
        now = now.get("review_below") if isinstance(now, dict) else now
    if key == "embeddings":
        return f"{RESUME_FIELDS[key]} was {'off' if was else 'on'}, now {'off' if now else 'on'}"
    return f"{RESUME_FIELDS[key]} was {_shown(was)}, now {_shown(now)}"


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)
