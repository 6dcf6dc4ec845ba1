"""The models, their releases and feature stages the job accepts, known without importing torch:
one `Architecture` record per backbone and one `Release` record per torchvision release.

Builders and weights come from torchvision (models.py, weights.py), in the model actors;
the driver, which runs no model, checks its arguments, picks the preprocessing and names
the classes from the tables here, never importing torch (seconds of a core at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ..core.columns import EMBEDDING, STAGES
from ..core.errors import UsageError
from ..core.storage import filesystem, is_local
from ..data.preprocessing import Preprocessing

BASIC_WIDTHS = (64, 128, 256, 512)  # output channels of layer1..layer4
BOTTLENECK_WIDTHS = (256, 512, 1024, 2048)  # ResNeXt and wide ResNets widen inside blocks only
V1, V2 = "IMAGENET1K_V1", "IMAGENET1K_V2"
DEFAULT = "DEFAULT"  # --weights DEFAULT: the architecture's `default` release
_DOWNLOADS = "https://download.pytorch.org/models/"

# The evaluation recipe all of torchvision's releases share (its ImageClassification preset).
CROP_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RECIPE_INTERPOLATION = "bilinear"


@dataclass(frozen=True)
class Release:
    """A torchvision weights release as its `Weights` enum member describes it: the download,
    the recipe of its `transforms()`, its categories and its published ImageNet-1K accuracy
    (%). tests/test_models.py checks every field against torchvision."""

    name: str  # the enum member's name: IMAGENET1K_V1
    url: str
    resize_size: int  # before the 224 centre crop
    acc1: float
    acc5: float

    @property
    def recipe(self) -> Preprocessing:
        return Preprocessing(self.resize_size, CROP_SIZE, IMAGENET_MEAN, IMAGENET_STD, RECIPE_INTERPOLATION)

    @property
    def categories(self) -> tuple[str, ...]:
        return imagenet_categories()

    @property
    def errors(self) -> tuple[float, float]:
        """The published top-1 and top-5 error, %."""
        return round(100 - self.acc1, 3), round(100 - self.acc5, 3)


@dataclass(frozen=True)
class Architecture:
    """One backbone: its stages' widths, its torchvision releases and which one DEFAULT
    means, its layout in a Hugging Face config, whether timm's model of that name has
    torchvision's layout, and what its forward holds per image."""

    name: str
    stage_widths: tuple[int, int, int, int]  # channels of c2..c5
    releases: tuple[Release, ...] = ()
    default: str = V1  # the release --weights DEFAULT names (torchvision's DEFAULT)
    hf_layout: tuple[str, tuple[int, ...]] | None = None  # (layer_type, depths) in a transformers config
    timm_layout: bool = False  # timm's model of this name keeps torchvision's layout and key names
    # Peak memory of one 224x224 image's forward on a CPU, fp32, channels_last, inference
    # mode (MiB, measured by peak RSS at batch 16 and 64); it grows with the pixels.
    activation_mib_224: float = 10.0

    @property
    def embedding_dim(self) -> int:
        return self.stage_widths[-1]

    def weights_names(self) -> list[str]:
        return [DEFAULT, *(r.name for r in self.releases)]

    def release(self, name: str) -> Release:
        """The release `name` means (DEFAULT: the default one), or a one-line refusal."""
        wanted = self.default if name == DEFAULT else name
        found = next((r for r in self.releases if r.name == wanted), None)
        if found is None:
            raise UsageError(f"unknown weights {name!r} for {self.name}; {valid_weights(self.name)}")
        return found


def _resnet(
    name: str,
    widths: tuple[int, int, int, int],
    v1: tuple[str, float, float],
    v2: tuple[str, float, float] | None = None,
    v1_resize: int = 256,
    depths: tuple[int, ...] | None = None,
) -> Architecture:
    """An architecture from each release's file hash and top-1/top-5 accuracy; V2 resizes to
    232 and is the default where there is one, as in torchvision. `depths`: blocks per stage
    of a plain ResNet, whose layout transformers' configs and timm's models share."""
    releases = [Release(V1, f"{_DOWNLOADS}{name}-{v1[0]}.pth", v1_resize, v1[1], v1[2])]
    if v2:
        releases.append(Release(V2, f"{_DOWNLOADS}{name}-{v2[0]}.pth", 232, v2[1], v2[2]))
    mib = 6.0 if widths == BASIC_WIDTHS else 20.0 if name.startswith("wide_") else 10.0
    block = "basic" if widths == BASIC_WIDTHS else "bottleneck"
    return Architecture(
        name,
        widths,
        tuple(releases),
        V2 if v2 else V1,
        hf_layout=(block, depths) if depths else None,
        timm_layout=depths is not None,
        activation_mib_224=mib,
    )


B, N = BASIC_WIDTHS, BOTTLENECK_WIDTHS
ARCHITECTURES = {
    a.name: a
    for a in (
        _resnet("resnet18", B, ("f37072fd", 69.758, 89.078), depths=(2, 2, 2, 2)),
        _resnet("resnet34", B, ("b627a593", 73.314, 91.42), depths=(3, 4, 6, 3)),
        _resnet("resnet50", N, ("0676ba61", 76.13, 92.862), ("11ad3fa6", 80.858, 95.434), depths=(3, 4, 6, 3)),
        _resnet("resnet101", N, ("63fe2227", 77.374, 93.546), ("cd907fc2", 81.886, 95.78), depths=(3, 4, 23, 3)),
        _resnet("resnet152", N, ("394f9c45", 78.312, 94.046), ("f82ba261", 82.284, 96.002), depths=(3, 8, 36, 3)),
        _resnet("resnext50_32x4d", N, ("7cdf4587", 77.618, 93.698), ("1a0047aa", 81.198, 95.34)),
        _resnet("resnext101_32x8d", N, ("8ba56ff5", 79.312, 94.526), ("110c445d", 82.834, 96.228)),
        _resnet("resnext101_64x4d", N, ("173b62eb", 83.246, 96.454), v1_resize=232),
        _resnet("wide_resnet50_2", N, ("95faca4d", 78.468, 94.086), ("9ba9bcbe", 81.602, 95.758)),
        _resnet("wide_resnet101_2", N, ("32ee1156", 78.848, 94.284), ("d733dc28", 82.51, 96.02)),
    )
}
# --model none: no network, rows of zeros with resnet50's columns and sizes, so that a
# benchmark measures what the pipeline itself costs (listing, decoding, moving, writing).
NULL_MODEL = "none"
NULL_RECIPE_MODEL = "resnet50"  # whose columns and reference recipe the null model follows
MODEL_NAMES = (*ARCHITECTURES, NULL_MODEL)


def architecture(model: str) -> Architecture:
    """The architecture of a checked model name; the null model has resnet50's."""
    return ARCHITECTURES[NULL_RECIPE_MODEL if model == NULL_MODEL else model]


NO_WEIGHTS = "none"
# What the summary and the report say of an output labeled with NO_WEIGHTS.
RANDOM_WEIGHTS_NOTE = (
    "--weights none: the labels come from random weights and mean nothing (nor do near-duplicates by "
    "embedding); give pretrained --weights or a checkpoint for real labels"
)
HF_PREFIX = "hf:"
CHECKPOINT_FORMS = "a .pt/.pth/.safetensors file, a save_pretrained folder or hf:ORG/NAME, local or s3://, gs://, ..."

# Backbone stages by their detection names: cN is layer(N-1)'s output, at stride 2**N.
STAGE_STRIDES = {stage: 2 ** int(stage[1]) for stage in STAGES}
POOLED = "pooled"  # the classifier's input: c5 average-pooled, written as `embedding`


def map_cells(pixels: Any, stride: int) -> Any:
    """Cells along a side of `pixels` (a number, or numpy's numbers) in a stage's map of
    `stride` (a part cell counts)."""
    return -(-pixels // stride)


FEATURES = (POOLED, *STAGES)


def activation_bytes(model: str, pixels: int, precision: str) -> int:
    """About what a CPU forward holds per image of `pixels` input pixels (0: the null model)."""
    if model == NULL_MODEL:
        return 0
    mib = architecture(model).activation_mib_224 * (0.5 if precision in ("bf16", "fp16") else 1)
    return int(mib * 2**20 * pixels / CROP_SIZE**2)


def check_model(name: str) -> str:
    """The model `name` names, in any case (ResNet18 is resnet18)."""
    if name.lower() not in MODEL_NAMES:
        raise UsageError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
    return name.lower()


def valid_weights(model: str) -> str:
    """What --weights takes for `model`, for error messages."""
    return (
        f"valid: {', '.join([*ARCHITECTURES[model].weights_names(), NO_WEIGHTS, 'PATH-or-URI'])} ({CHECKPOINT_FORMS})"
    )


def looks_like_weights_name(value: str) -> bool:
    """IMAGENET1K_V2, DEFAULT: what --weights means as a torchvision name rather than a path."""
    return value.replace("_", "").isalnum() and value.upper() == value


@cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1,000 class names every torchvision ImageNet release ships (its meta["categories"])."""
    return tuple(resources.files("resnet_batch").joinpath("imagenet_classes.txt").read_text().splitlines())


@dataclass(frozen=True)
class WeightsChoice:
    """What --weights names, from its form alone (nothing read): random init, a torchvision
    release (DEFAULT resolved), a pretrained folder or hf:ORG/NAME, or a checkpoint file."""

    kind: str  # "none" | "release" | "pretrained" | "checkpoint"
    value: str  # the release's name, or the path or URI as given


def choose_weights(model: str, weights: str) -> WeightsChoice:
    """The one reading of --weights for `model` (an unknown release name refused), for the
    driver's early check and for weights.py, which resolves the choice."""
    if model == NULL_MODEL:
        if weights not in (DEFAULT, NO_WEIGHTS):
            raise UsageError(
                f"--model {NULL_MODEL} (the null model, a benchmark aid) takes no --weights, got {weights!r}"
            )
        return WeightsChoice("none", NO_WEIGHTS)
    if weights.lower() == NO_WEIGHTS:
        return WeightsChoice("none", NO_WEIGHTS)
    if weights == DEFAULT or looks_like_weights_name(weights):
        return WeightsChoice("release", ARCHITECTURES[model].release(weights).name)
    return WeightsChoice("pretrained" if weights.startswith(HF_PREFIX) else "checkpoint", weights)


def check_weights_argument(model: str, weights: str) -> None:
    """What resolving the weights (on a thread, awaited only once Ray has started) would
    refuse, refused now: an unknown release name, a missing local checkpoint."""
    choice = choose_weights(model, weights)
    if choice.kind == "checkpoint" and is_local(weights) and not _exists(weights):
        raise UsageError(f"checkpoint not found: {weights}; --weights {valid_weights(model)}")


def _exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def column_of(feature: str) -> str:
    """The output column of a --features value: `pooled` is written as `embedding`."""
    return EMBEDDING if feature == POOLED else feature


def stage_width(model: str, stage: str) -> int:
    return architecture(model).stage_widths[STAGES.index(stage)]


def feature_width(model: str, feature: str) -> int:
    """Values in a --features value's vector (`pooled` is c5's average)."""
    return architecture(model).embedding_dim if feature == POOLED else stage_width(model, feature)


def describe_models() -> list[dict]:
    """What `resnet-batch models` lists: each backbone, its releases and default, its widths."""
    return [
        {
            "model": arch.name,
            "weights": [*arch.weights_names(), NO_WEIGHTS, "PATH-or-URI"],
            "default": arch.default,
            "embedding_dim": arch.embedding_dim,
            "stage_widths": dict(zip(STAGES, arch.stage_widths, strict=True)),
        }
        for arch in ARCHITECTURES.values()
    ]
