"""The label job's configuration: one frozen dataclass, validated at construction.

Its options are declared in options.py (defaults included); a YAML config file and
command-line flags say the same things (same names, dashes or underscores); flags win.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..core import checks
from ..core.columns import EMBEDDING_DTYPES, SPATIAL_STAGES
from ..core.errors import UsageError
from ..data.preprocessing import GPU_DECODERS
from ..model.registry import FEATURES, POOLED, check_model
from ..output.writer import MODES
from .config_file import typed
from .options import BY_NAME, CROPS, DECODERS, DEVICES, PRECISIONS, default


@dataclass(frozen=True)
class ComputeOptions:
    """What the job computes: what each row holds."""

    model: str = default("model")
    weights: str = default("weights")
    preprocess: str | None = default("preprocess")
    labels: str | None = default("labels")
    top_k: int = default("top_k")
    review_below: float | None = default("review_below")
    embeddings: bool = default("embeddings")
    features: tuple[str, ...] = default("features")
    embedding_dtype: str = default("embedding_dtype")
    spatial: str | None = default("spatial")
    crop: str = default("crop")
    resize: int | None = default("resize")

    def __post_init__(self):
        object.__setattr__(self, "model", check_model(self.model))  # as written or in any case: ResNet18
        self._check_features()
        checks.one_of("--embedding-dtype", self.embedding_dtype, tuple(EMBEDDING_DTYPES))
        checks.whole_number("--top-k", self.top_k, minimum=0)
        if self.top_k > 1000:
            raise UsageError(f"--top-k must be at most 1000, got {self.top_k}")
        if self.review_below is not None:
            checks.fraction("--review-below", self.review_below, "probability")
            if self.top_k == 0:
                raise UsageError("--review-below needs labels: use --top-k 1 or more")
        if self.top_k == 0 and not self.features and not self.spatial:
            raise UsageError("--top-k 0 without --features or --spatial leaves nothing to compute")

    def _check_features(self) -> None:
        features = self.features.split(",") if isinstance(self.features, str) else list(self.features)
        features = [f.strip() for f in features if f.strip() and f.strip() != "none"]
        for feature in features:
            checks.one_of("--features value", feature, FEATURES)
        if not self.embeddings:
            features = [f for f in features if f != POOLED]
        object.__setattr__(self, "features", tuple(dict.fromkeys(features)))  # normalised, in given order
        if self.spatial is not None:
            checks.one_of("--spatial", self.spatial, SPATIAL_STAGES)
        checks.one_of("--crop", self.crop, CROPS)
        if self.resize is not None:
            if self.crop != "none":
                raise UsageError("--resize applies to --crop none; --crop center uses the weights' own resize and crop")
            checks.whole_number("--resize", self.resize, minimum=0)


@dataclass(frozen=True)
class ExecutionOptions:
    """How the job runs: where, on what, in what precision, how it saves and reports.
    None: automatic, as the plan derives it from the cluster and the inputs."""

    address: str | None = default("address")
    device: str = default("device")
    precision: str = default("precision")
    batch_size: int | None = default("batch_size")
    num_workers: int | None = default("num_workers")
    threads_per_worker: int | None = default("threads_per_worker")
    io_threads: int | None = default("io_threads")
    compile: bool = default("compile")
    decode: str = default("decode")
    gpu_decoder: str = default("gpu_decoder")
    cpu_decode_share: float | str = default("cpu_decode_share")
    max_pixels: int = default("max_pixels")
    max_bytes: int = default("max_bytes")
    rows_per_file: int = default("rows_per_file")
    checkpoint_every: float = default("checkpoint_every")
    progress_every: float = default("progress_every")
    wait_for_resources: float = default("wait_for_resources")

    def __post_init__(self):
        checks.one_of("--device", self.device, DEVICES)
        checks.one_of("--precision", self.precision, PRECISIONS)
        checks.one_of("--decode", self.decode, DECODERS)
        checks.one_of("--gpu-decoder", self.gpu_decoder, ("auto",) + GPU_DECODERS)
        checks.whole_number_or_auto("--batch-size", self.batch_size)
        checks.whole_number("--rows-per-file", self.rows_per_file)
        checks.whole_number_or_auto("--num-workers", self.num_workers)
        checks.whole_number_or_auto("--threads-per-worker", self.threads_per_worker)
        checks.whole_number_or_auto("--io-threads", self.io_threads)
        checks.whole_number("--max-pixels", self.max_pixels)
        checks.whole_number("--max-bytes", self.max_bytes)
        checks.seconds("--checkpoint-every", self.checkpoint_every)
        checks.seconds("--progress-every", self.progress_every)
        checks.seconds("--wait-for-resources", self.wait_for_resources)
        self._check_decode_share()

    def _check_decode_share(self) -> None:
        share = self.cpu_decode_share
        if share == "auto":
            return
        try:
            number = float(share) if isinstance(share, str) else share
            checks.fraction("--cpu-decode-share", number, allow_zero=True)
        except (ValueError, UsageError):
            raise UsageError(f"--cpu-decode-share must be auto or a fraction in [0, 1], got {share!r}") from None
        object.__setattr__(self, "cpu_decode_share", float(number))


GROUPS = {"compute": ComputeOptions, "execution": ExecutionOptions}


@dataclass(frozen=True)
class LabelConfig:
    """A label job: its inputs and output, what it computes and how it runs. The config file
    and the flags name every option flat (`top_k`, `device`); `of` and `replace` take them so."""

    inputs: tuple[str, ...]
    output: str
    mode: str = default("mode")
    path_column: str = default("path_column")
    add_to_output: bool = default("add_to_output")
    compute: ComputeOptions = ComputeOptions()
    execution: ExecutionOptions = ExecutionOptions()

    def __post_init__(self):
        if not self.inputs:
            raise UsageError("give at least one INPUT (directory, file, glob, URI or manifest)")
        if not self.output:
            raise UsageError("--output is required")
        checks.one_of("--mode", self.mode, MODES)
        self._check_resize_fits()
        if self.compute.crop == "none" and self.execution.decode == "gpu":
            raise UsageError("--decode gpu supports --crop center only; use --decode cpu with --crop none")

    def _check_resize_fits(self) -> None:
        """--resize between the coarsest stride and the size whose largest output (resize x
        2 * resize, the longer side's cap) stays within --max-pixels."""
        resize, max_pixels = self.compute.resize, self.execution.max_pixels
        if resize is None:
            return
        largest = math.isqrt(max_pixels // 2)
        if not 32 <= resize <= largest:
            raise UsageError(
                f"--resize must be between 32 (the coarsest stride) and {largest} (images up to "
                f"{largest}x{2 * largest} pixels, within --max-pixels {max_pixels}), got {resize}"
            )

    @classmethod
    def of(cls, **values: Any) -> LabelConfig:
        """A config from flat option names, each routed to the group its record names."""
        grouped: dict[str, dict] = {group: {} for group in ("job", *GROUPS)}
        for name, value in values.items():
            if name not in BY_NAME:
                raise UsageError(f"unknown option {name!r}; valid: {', '.join(sorted(BY_NAME))}")
            grouped[BY_NAME[name].group][name] = value
        job = grouped.pop("job")
        job.setdefault("inputs", default("inputs"))
        job.setdefault("output", default("output"))
        return cls(**job, **{group: GROUPS[group](**fields) for group, fields in grouped.items()})

    def replace(self, **changes: Any) -> LabelConfig:
        """This config with some options changed, by their flat names."""
        return LabelConfig.of(**{**self.options(), **changes})

    def options(self) -> dict[str, Any]:
        """Every option by its flat name."""
        holders = {"job": self, **{group: getattr(self, group) for group in GROUPS}}
        return {name: getattr(holders[option.group], name) for name, option in BY_NAME.items()}

    @classmethod
    def from_sources(cls, file_values: dict, flag_values: dict) -> LabelConfig:
        """Merge a config file's values with flags (flags win; None means 'not given')."""
        merged: dict = {}
        for source, values in (("config file", file_values), ("flags", flag_values)):
            for key, value in values.items():
                name = key.replace("-", "_")
                if name not in BY_NAME:
                    raise UsageError(f"unknown {source} key {key!r}; valid: {', '.join(sorted(BY_NAME))}")
                if value is not None:
                    merged[name] = typed(key, value, BY_NAME[name].kind) if source == "config file" else value
        if isinstance(merged.get("inputs"), str):
            merged["inputs"] = [merged["inputs"]]
        merged["inputs"] = tuple(merged.get("inputs") or ())
        return cls.of(**merged)
