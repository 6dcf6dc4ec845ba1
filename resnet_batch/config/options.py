"""Every option of a label job, declared once: its name, where it lives in LabelConfig, its
kind and default, what it means. The command line's parser, the config file's keys and
types, the README's table and LabelConfig.of/replace all come from these records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.columns import EMBEDDING_DTYPES, PATH, SPATIAL_STAGES
from ..data.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from ..data.preprocessing import GPU_DECODERS
from ..model.registry import ARCHITECTURES, DEFAULT, NULL_MODEL
from ..output.writer import MODES

DECODERS = ("auto", "cpu", "gpu")
CROPS = ("center", "none")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
GROUPS = ("job", "compute", "execution")  # LabelConfig's own fields, ComputeOptions, ExecutionOptions
SECTIONS = ("inputs and output", "what is computed", "how it runs")  # --help's groups, in order
KINDS = ("str", "int", "float", "bool", "strings", "number_or_word")  # how a config file's value is read


@dataclass(frozen=True)
class Option:
    """One option. `name` is the config file's key (dashes or underscores) and, dashed, the
    flag; `shown` says the default in words where the value alone would not."""

    name: str
    group: str  # where LabelConfig holds it: one of GROUPS
    section: str  # the --help group it is listed in: one of SECTIONS
    kind: str  # one of KINDS
    default: Any
    help: str
    choices: tuple[str, ...] = ()  # the values it takes, named first in its help
    shown: str | None = None  # the default in words ("required": no default)
    flags: tuple[str, ...] = ()  # the flags that set it, when not just --name
    metavar: str | None = None
    const: Any = None  # a flag without a value sets this (--compile, --no-embeddings)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def described(self) -> str:
        """The help line: the choices, what it means, the default."""
        choices = "|".join(self.choices) + ": " if self.choices else ""
        if self.shown == "required":
            default = "(required)"
        elif self.shown is not None:
            default = f"(default: {self.shown})"
        elif self.kind == "strings":
            default = f"(default {','.join(self.default)})"
        else:
            default = f"(default {self.default:g})" if isinstance(self.default, float) else f"(default {self.default})"
        return f"{choices}{self.help} {default}".strip()


IO, COMPUTE, RUN = SECTIONS
OPTIONS = (
    Option(
        "inputs",
        "job",
        IO,
        "strings",
        (),
        "directory, image file, glob, fsspec URI, or manifest (.txt/.csv/.parquet)",
        shown="required",
        metavar="INPUT",
    ),
    Option(
        "output",
        "job",
        IO,
        "str",
        "",
        "output Parquet dataset directory (local path or URI)",
        shown="required",
        flags=("--output", "-o"),
    ),
    Option("mode", "job", IO, "str", "error", "when OUTPUT holds results", MODES),
    Option("path_column", "job", IO, "str", PATH, "manifest column holding image URIs"),
    Option(
        "add_to_output",
        "job",
        IO,
        "bool",
        False,
        "with --mode resume: label these INPUTs into an output that holds rows of other inputs "
        "(without it, such a resume is refused as another job's)",
        shown="off",
        const=True,
    ),
    Option("rows_per_file", "execution", IO, "int", 10_000, "rows per Parquet part file, at most"),
    Option(
        "model",
        "compute",
        COMPUTE,
        "str",
        "resnet50",
        f"{', '.join(ARCHITECTURES)}, or {NULL_MODEL}: the null model, a benchmark aid that runs no network "
        "and writes resnet50's columns, filled with constants",
    ),
    Option("weights", "compute", COMPUTE, "str", DEFAULT, "DEFAULT|IMAGENET1K_V1|IMAGENET1K_V2|none|PATH-or-URI"),
    Option(
        "preprocess",
        "compute",
        COMPUTE,
        "str",
        None,
        "torchvision weights whose transforms() a checkpoint or 'none' uses",
        shown="IMAGENET1K_V1",
    ),
    Option(
        "labels",
        "compute",
        COMPUTE,
        "str",
        None,
        "class names for a checkpoint's outputs: a file with one name a line, or JSON (a list or {id: name})",
        shown="the weights' own, ImageNet's for torchvision's",
    ),
    Option("top_k", "compute", COMPUTE, "int", 5, "labels per image, 0 = no labels"),
    Option(
        "review_below",
        "compute",
        COMPUTE,
        "float",
        None,
        "add needs_review: true where the top-1 probability is under P (0-1)",
        shown="no needs_review column",
        metavar="P",
    ),
    Option(
        "embeddings",
        "compute",
        COMPUTE,
        "bool",
        True,
        "do not write the pooled embedding",
        shown="written",
        flags=("--no-embeddings",),
        const=False,
    ),
    Option(
        "features",
        "compute",
        COMPUTE,
        "strings",
        ("pooled",),
        "comma-separated: pooled (the `embedding` column), c2, c3, c4, c5 (each stage average-pooled, a column each)",
    ),
    Option("embedding_dtype", "compute", COMPUTE, "str", "float32", "of the pooled vectors", tuple(EMBEDDING_DTYPES)),
    Option(
        "spatial",
        "compute",
        COMPUTE,
        "str",
        None,
        "also write that stage's whole feature map, float16, as spatial_c4/spatial_c5 (stride 16/32)",
        SPATIAL_STAGES,
        shown="none",
    ),
    Option(
        "crop",
        "compute",
        COMPUTE,
        "str",
        "center",
        "none keeps the whole image (shorter side resized, padded to a few batch shapes; rows record scale and "
        "valid cells)",
        CROPS,
    ),
    Option(
        "resize",
        "compute",
        COMPUTE,
        "int",
        None,
        "with --crop none: shorter side in pixels",
        shown="the weights' own, e.g. 256",
    ),
    Option(
        "address",
        "execution",
        RUN,
        "str",
        None,
        "the Ray cluster to join, from one of its nodes: HOST:6379 or auto (the one `ray start` began on this "
        "machine); from off the cluster, use submit",
        shown="$RAY_ADDRESS, else a Ray of the job's own, started here and stopped at the end",
    ),
    Option("device", "execution", RUN, "str", "auto", "the model's device", DEVICES),
    Option(
        "precision", "execution", RUN, "str", "auto", "of the forward", PRECISIONS, shown="auto: bf16/fp16 where fast"
    ),
    Option(
        "batch_size",
        "execution",
        RUN,
        "int",
        None,
        "images per model batch",
        shown="256 on a GPU, on a CPU 32 (fp32) or 64 (bf16)",
    ),
    Option("num_workers", "execution", RUN, "int", None, "model actors", shown="one per GPU / CPU node"),
    Option(
        "threads_per_worker",
        "execution",
        RUN,
        "int",
        None,
        "cores per CPU model actor, one single-threaded forward each; torch threads per GPU actor",
        shown="the node's cores on a CPU, 4 on a GPU",
    ),
    Option(
        "io_threads",
        "execution",
        RUN,
        "int",
        None,
        "file-fetch threads per decode task",
        shown="1 for local inputs, 16 for remote ones",
    ),
    Option("compile", "execution", RUN, "bool", False, "torch.compile the model", shown="off", const=True),
    Option(
        "decode",
        "execution",
        RUN,
        "str",
        "auto",
        "where JPEGs are decoded (gpu: batched decode, resize and crop in the model actor, within a grey level "
        "of the PIL reference; auto: gpu when the model runs on GPUs and --crop center, else cpu)",
        DECODERS,
    ),
    Option(
        "gpu_decoder",
        "execution",
        RUN,
        "str",
        "auto",
        "the decoder of GPU decoding (nvjpeg: torchvision's; nvimgcodec: NVIDIA's nvImageCodec, pip install "
        "'resnet-batch[gpu]'; auto: nvimgcodec where it is installed, else nvjpeg)",
        ("auto", *GPU_DECODERS),
    ),
    Option(
        "cpu_decode_share",
        "execution",
        RUN,
        "number_or_word",
        "auto",
        "with GPU decoding, the fraction of JPEGs CPU tasks decode anyway, so a node's cores and its GPU share "
        "the decoding; auto sets it from the decode and forward rates measured as the job runs",
        ("auto", "FRACTION"),
    ),
    Option(
        "max_pixels",
        "execution",
        RUN,
        "int",
        DEFAULT_MAX_PIXELS,
        "refuse images with more pixels, a 16-bit sample counting as two pixels, a 32-bit one as four",
    ),
    Option(
        "max_bytes",
        "execution",
        RUN,
        "int",
        DEFAULT_MAX_BYTES,
        "refuse (too_large) a file larger than this many bytes, before it is read whole",
    ),
    Option(
        "checkpoint_every",
        "execution",
        RUN,
        "float",
        60.0,
        "save finished rows at least this often (seconds), whatever --rows-per-file",
        metavar="SECONDS",
    ),
    Option(
        "progress_every",
        "execution",
        RUN,
        "float",
        30.0,
        "seconds between progress lines when not in a terminal",
        metavar="SECONDS",
    ),
    Option(
        "wait_for_resources",
        "execution",
        RUN,
        "float",
        600.0,
        "how long the job may wait for CPUs or GPUs the cluster lacks (the progress line says which), "
        "then fail with exit 2",
        metavar="SECONDS",
    ),
)
BY_NAME = {option.name: option for option in OPTIONS}


def default(name: str) -> Any:
    """The default of option `name`, as its record declares it."""
    return BY_NAME[name].default
