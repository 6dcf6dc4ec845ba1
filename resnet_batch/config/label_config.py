"""The label job's configuration: one frozen dataclass, validated at construction.

A YAML config file and command-line flags say the same things (same names, dashes or
underscores); flags win.
"""

from __future__ import annotations

import dataclasses
import math
import os
import posixpath
import typing
from dataclasses import dataclass
from typing import Any

from ..core import checks
from ..core.columns import EMBEDDING_DTYPES, PATH, SPATIAL_STAGES
from ..core.errors import UsageError, one_line
from ..data.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from ..data.preprocessing import GPU_DECODERS
from ..model.registry import FEATURES, POOLED, check_model
from ..output.writer import MODES

DECODERS = ("auto", "cpu", "gpu")
CROPS = ("center", "none")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ComputeOptions:
    """What the job computes: what each row holds."""

    model: str = "resnet50"
    weights: str = "DEFAULT"
    preprocess: str | None = None  # torchvision weights whose transforms() a checkpoint uses
    labels: str | None = None  # class names for the weights' outputs: one a line, or JSON
    top_k: int = 5
    review_below: float | None = None  # needs_review = top-1 probability under this
    embeddings: bool = True  # False drops "pooled" from features (--no-embeddings)
    features: tuple[str, ...] = (POOLED,)  # pooled (the `embedding` column) and/or c2..c5; "a,b" in files
    embedding_dtype: str = "float32"
    spatial: str | None = None  # c4|c5: that stage's whole map per row
    crop: str = "center"  # "none": the whole image, shorter side resized, padded to a few shapes
    resize: int | None = None  # --crop none: shorter side in pixels; None: the weights' own resize

    def __post_init__(self):
        object.__setattr__(self, "model", check_model(self.model))  # as written or in any case: ResNet18
        self._check_features()
        checks.one_of("--embedding-dtype", self.embedding_dtype, EMBEDDING_DTYPES)
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

    address: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None  # per device: 256 on GPU; on CPU 32 (fp32) or 64 (bf16)
    num_workers: int | None = None  # model actors: one per GPU, or one per CPU node
    threads_per_worker: int | None = None  # CPU actor: cores, one single-threaded forward each; GPU: torch threads
    io_threads: int | None = None  # file-fetch threads per decode task: 1 local, 16 remote
    compile: bool = False
    decode: str = "auto"  # "gpu": JPEGs decoded in the model actor; auto: gpu on GPU actors
    gpu_decoder: str = "auto"  # with gpu decoding: nvjpeg, nvimgcodec, or auto (nvimgcodec where installed)
    # With gpu decoding: the share of JPEGs CPU tasks decode all the same; "auto" sets it
    # from the rates measured as the job runs (run/decode_share.py).
    cpu_decode_share: float | str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    rows_per_file: int = 10_000
    checkpoint_every: float = 60.0  # seconds: finished rows wait at most this long to be saved
    progress_every: float = 30.0  # seconds between progress lines when not in a terminal
    wait_for_resources: float = 600.0  # seconds a job may wait for CPUs/GPUs it lacks, then fails (exit 2)

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
    mode: str = "error"  # when the output holds results: error | overwrite | resume
    path_column: str = PATH  # the manifest column holding image paths or URIs
    add_to_output: bool = False  # resume: the output may hold rows of inputs this run does not list
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
        """A config from flat option names, each routed to its group."""
        grouped: dict[str, dict] = {group: {} for group in GROUPS}
        top: dict[str, Any] = {}
        for name, value in values.items():
            group = _GROUP_OF.get(name)
            (grouped[group] if group else top)[name] = value
        return cls(**top, **{group: GROUPS[group](**fields) for group, fields in grouped.items()})

    def replace(self, **changes: Any) -> LabelConfig:
        """This config with some options changed, by their flat names."""
        return LabelConfig.of(**{**self.options(), **changes})

    def options(self) -> dict[str, Any]:
        """Every option by its flat name."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in GROUPS}
        for group in GROUPS:
            values.update(dataclasses.asdict(getattr(self, group)))
        return values

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.name not in GROUPS} | set(_GROUP_OF)

    @classmethod
    def from_sources(cls, file_values: dict, flag_values: dict) -> LabelConfig:
        """Merge a config file's values with flags (flags win; None means 'not given')."""
        merged: dict = {}
        hints = _option_types()
        for source, values in (("config file", file_values), ("flags", flag_values)):
            for key, value in values.items():
                name = key.replace("-", "_")
                if name not in cls.field_names():
                    raise UsageError(f"unknown {source} key {key!r}; valid: {', '.join(sorted(cls.field_names()))}")
                if value is not None:
                    merged[name] = _typed(key, value, hints[name]) if source == "config file" else value
        if isinstance(merged.get("inputs"), str):
            merged["inputs"] = [merged["inputs"]]
        merged["inputs"] = tuple(merged.get("inputs") or ())
        merged.setdefault("output", "")
        return cls.of(**merged)


_GROUP_OF = {f.name: group for group, kind in GROUPS.items() for f in dataclasses.fields(kind)}


def _option_types() -> dict[str, Any]:
    """Each option's type hint, by its flat name."""
    hints = {name: hint for name, hint in typing.get_type_hints(LabelConfig).items() if name not in GROUPS}
    for kind in GROUPS.values():
        hints.update(typing.get_type_hints(kind))
    return hints


TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _typed(key: str, value: object, hint: Any):
    """A config file's value as the field's type, or a one-line refusal (YAML gives any type)."""
    kinds = set(typing.get_args(hint)) or {hint}
    kinds.discard(type(None))
    if bool in kinds:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
            return value.strip().lower() in TRUE  # a quoted "false" is false
        raise UsageError(f"config key {key!r} must be true or false, got {value!r}")
    if int in kinds and float not in kinds:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UsageError(f"config key {key!r} must be an integer, got {value!r}")
    if float in kinds:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if str in kinds and isinstance(value, str):  # a number or a word (--cpu-decode-share auto)
            return value
        raise UsageError(f"config key {key!r} must be a number{' or a string' if str in kinds else ''}, got {value!r}")
    if typing.get_origin(hint) is tuple:  # inputs, features: one string or a list of strings
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value
        raise UsageError(f"config key {key!r} must be a string or a list of strings, got {value!r}")
    if isinstance(value, str):
        return value
    raise UsageError(f"config key {key!r} must be a string, got {value!r}")


def load_config_file(path: str) -> dict:
    import yaml

    from ..core.storage import read_bytes_or_raise

    try:
        values = yaml.safe_load(read_bytes_or_raise(path)) or {}
    except FileNotFoundError:
        raise UsageError(f"config file {path} not found") from None
    except OSError as exc:  # a folder, no permission, a FIFO
        raise UsageError(f"cannot read config file {path}: {one_line(exc)}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise UsageError(f"config file {path} must hold a mapping of option names to values")
    return _paths_relative_to(posixpath.dirname(path) or ".", values)


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def _paths_relative_to(base: str, values: dict) -> dict:
    """A config file's relative paths name files beside it, wherever the job is started from."""

    def resolve(value: object):
        if isinstance(value, str) and value.startswith("~"):
            return os.path.expanduser(value)
        if not isinstance(value, str) or "://" in value or value.startswith(("/", "hf:")):
            return value
        return posixpath.normpath(posixpath.join(base, value))

    values = dict(values)
    for key in ("inputs", "output"):
        if isinstance(values.get(key), list):
            values[key] = [resolve(v) for v in values[key]]
        elif key in values:
            values[key] = resolve(values[key])
    if isinstance(values.get("labels"), str):
        values["labels"] = resolve(values["labels"])
    weights = values.get("weights")
    if isinstance(weights, str) and ("/" in weights or weights.endswith(CHECKPOINT_SUFFIXES)):
        values["weights"] = resolve(weights)
    return values
