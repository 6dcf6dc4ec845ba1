"""The models, weights names and feature stages the job accepts, known without importing torch.

Builders and weights come from torchvision (models.py, weights.py), in the model actors;
the driver, which runs no model, checks its arguments, picks the preprocessing and names
the classes from the tables here, never importing torch (seconds of a core at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from ..core.columns import EMBEDDING, STAGES
from ..core.errors import UsageError
from ..core.storage import filesystem, is_local
from ..data.preprocessing import Preprocessing

BASIC_WIDTHS = (64, 128, 256, 512)  # output channels of layer1..layer4
BOTTLENECK_WIDTHS = (256, 512, 1024, 2048)  # ResNeXt and wide ResNets widen inside blocks only
STAGE_WIDTHS = {
    "resnet18": BASIC_WIDTHS,
    "resnet34": BASIC_WIDTHS,
    "resnet50": BOTTLENECK_WIDTHS,
    "resnet101": BOTTLENECK_WIDTHS,
    "resnet152": BOTTLENECK_WIDTHS,
    "resnext50_32x4d": BOTTLENECK_WIDTHS,
    "resnext101_32x8d": BOTTLENECK_WIDTHS,
    "resnext101_64x4d": BOTTLENECK_WIDTHS,
    "wide_resnet50_2": BOTTLENECK_WIDTHS,
    "wide_resnet101_2": BOTTLENECK_WIDTHS,
}
EMBEDDING_DIMS = {name: widths[-1] for name, widths in STAGE_WIDTHS.items()}
# Peak memory of one 224x224 image's forward on a CPU, fp32, channels_last, inference mode
# (MiB, measured by peak RSS at batch 16 and 64); it grows with the input's pixels, bf16
# holds about half, wide ResNets twice.
ACTIVATION_MIB_224 = {BASIC_WIDTHS: 6.0, BOTTLENECK_WIDTHS: 10.0}
# --model none: no network, rows of zeros with resnet50's columns and sizes, so that a
# benchmark measures what the pipeline itself costs (listing, decoding, moving, writing).
NULL_MODEL = "none"
MODEL_WIDTHS = {**STAGE_WIDTHS, NULL_MODEL: BOTTLENECK_WIDTHS}
NULL_RECIPE_MODEL = "resnet50"  # whose reference recipe the null model's decoding follows
# torchvision's pretrained weights per model (its enums, which tests check this against):
# each release's file and the resize of its evaluation recipe, so that the driver, which
# runs no model, never imports torch. DEFAULT is the last one listed.
V1, V2 = "IMAGENET1K_V1", "IMAGENET1K_V2"
_DOWNLOADS = "https://download.pytorch.org/models/"


# The evaluation recipe all of them share (torchvision's ImageClassification preset).
CROP_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RECIPE_INTERPOLATION = "bilinear"


@dataclass(frozen=True)
class Published:
    """A torchvision weights release as its `Weights` enum member describes it: the download,
    the recipe of its `transforms()`, its categories and its published ImageNet-1K accuracy
    (%). tests/test_models.py checks every field against torchvision."""

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


def _releases(
    model: str, v1: tuple[str, float, float], v2: tuple[str, float, float] | None = None, v1_resize: int = 256
) -> dict[str, Published]:
    """Each release from its file hash and top-1/top-5 accuracy; V2 resizes to 232."""
    releases = {V1: Published(f"{_DOWNLOADS}{model}-{v1[0]}.pth", v1_resize, v1[1], v1[2])}
    if v2:
        releases[V2] = Published(f"{_DOWNLOADS}{model}-{v2[0]}.pth", 232, v2[1], v2[2])
    return releases


TORCHVISION_WEIGHTS = {
    "resnet18": _releases("resnet18", ("f37072fd", 69.758, 89.078)),
    "resnet34": _releases("resnet34", ("b627a593", 73.314, 91.42)),
    "resnet50": _releases("resnet50", ("0676ba61", 76.13, 92.862), ("11ad3fa6", 80.858, 95.434)),
    "resnet101": _releases("resnet101", ("63fe2227", 77.374, 93.546), ("cd907fc2", 81.886, 95.78)),
    "resnet152": _releases("resnet152", ("394f9c45", 78.312, 94.046), ("f82ba261", 82.284, 96.002)),
    "resnext50_32x4d": _releases("resnext50_32x4d", ("7cdf4587", 77.618, 93.698), ("1a0047aa", 81.198, 95.34)),
    "resnext101_32x8d": _releases("resnext101_32x8d", ("8ba56ff5", 79.312, 94.526), ("110c445d", 82.834, 96.228)),
    "resnext101_64x4d": _releases("resnext101_64x4d", ("173b62eb", 83.246, 96.454), v1_resize=232),
    "wide_resnet50_2": _releases("wide_resnet50_2", ("95faca4d", 78.468, 94.086), ("9ba9bcbe", 81.602, 95.758)),
    "wide_resnet101_2": _releases("wide_resnet101_2", ("32ee1156", 78.848, 94.284), ("d733dc28", 82.51, 96.02)),
}
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
FEATURES = (POOLED, *STAGES)


def activation_bytes(model: str, pixels: int, precision: str) -> int:
    """About what a CPU forward holds per image of `pixels` input pixels (0: the null model)."""
    if model == NULL_MODEL:
        return 0
    mib = ACTIVATION_MIB_224.get(STAGE_WIDTHS.get(model, BOTTLENECK_WIDTHS), 10.0)
    mib *= (2 if model.startswith("wide_") else 1) * (0.5 if precision in ("bf16", "fp16") else 1)
    return int(mib * 2**20 * pixels / CROP_SIZE**2)


def check_model(name: str) -> str:
    """The model `name` names, in any case (ResNet18 is resnet18)."""
    if name.lower() not in MODEL_WIDTHS:
        raise UsageError(f"unknown model {name!r}; valid: {', '.join(MODEL_WIDTHS)}")
    return name.lower()


def weights_names(model: str) -> list[str]:
    return ["DEFAULT", *TORCHVISION_WEIGHTS[model]]


def valid_weights(model: str) -> str:
    """What --weights takes for `model`, for error messages."""
    return f"valid: {', '.join([*weights_names(model), NO_WEIGHTS, 'PATH-or-URI'])} ({CHECKPOINT_FORMS})"


def looks_like_weights_name(value: str) -> bool:
    """IMAGENET1K_V2, DEFAULT: what --weights means as a torchvision name rather than a path."""
    return value.replace("_", "").isalnum() and value.upper() == value


def check_weights_name(model: str, name: str) -> str:
    if name not in weights_names(model):
        raise UsageError(f"unknown weights {name!r} for {model}; {valid_weights(model)}")
    return name


def release_name(model: str, name: str) -> str:
    """A torchvision weights name as the release it means: DEFAULT is the newest."""
    return list(TORCHVISION_WEIGHTS[model])[-1] if check_weights_name(model, name) == "DEFAULT" else name


@cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1,000 class names every torchvision ImageNet release ships (its meta["categories"])."""
    return tuple(resources.files("resnet_batch").joinpath("imagenet_classes.txt").read_text().splitlines())


def check_weights_argument(model: str, weights: str) -> None:
    """Refuses, before Ray starts, what resolving the weights (on a thread, awaited only once Ray
    has started) would refuse: an unknown torchvision weights name, a missing local checkpoint."""
    if model == NULL_MODEL:
        if weights not in ("DEFAULT", NO_WEIGHTS):
            raise UsageError(
                f"--model {NULL_MODEL} (the null model, a benchmark aid) takes no --weights, got {weights!r}"
            )
        return
    if weights.lower() == NO_WEIGHTS or weights.startswith(HF_PREFIX):
        return
    if looks_like_weights_name(weights):
        check_weights_name(model, weights)
    elif is_local(weights) and not _exists(weights):
        raise UsageError(f"checkpoint not found: {weights}; --weights {valid_weights(model)}")


def _exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def column_of(feature: str) -> str:
    """The output column of a --features value: `pooled` is written as `embedding`."""
    return EMBEDDING if feature == POOLED else feature


def stage_width(model: str, stage: str) -> int:
    return MODEL_WIDTHS[model][STAGES.index(stage)]


def feature_width(model: str, feature: str) -> int:
    """Values in a --features value's vector (`pooled` is c5's average)."""
    return MODEL_WIDTHS[model][-1] if feature == POOLED else stage_width(model, feature)
