"""The package's layout as ARCHITECTURE.md draws it, read from the source's imports."""

from __future__ import annotations

import ast
import importlib
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "resnet_batch"
LAYERS = [
    "core",
    "data",
    "device",
    "model",
    "output",
    "review",
    "config",
    "run",
    "cli",
]  # each imports only those before it
MAX_MODULE_LINES = 350  # physical lines, as a reader sees them
MAX_FUNCTION_LINES = 60
MAX_RUN_LINES = 2500  # run/: the job on Ray and nothing else


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """Every module of the package and every outside package `name` imports, at any depth:
    inside functions and under `if TYPE_CHECKING:` too."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES}
    return found


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


GRAPH = {name: {m for m in imports(name) if m in MODULES and m != name} for name in MODULES}


def test_layers_import_only_the_layers_below():
    upward = []
    for name, targets in GRAPH.items():
        mine = layer(name)
        for target in targets:
            theirs = layer(target)
            if mine and theirs and LAYERS.index(theirs) > LAYERS.index(mine):
                upward.append(f"{name} -> {target}")
    assert not upward, upward


def test_no_import_circles():
    """Between all imports: those under TYPE_CHECKING and those inside functions count too."""
    circles = []

    def visit(name, path):
        for target in GRAPH[name]:
            if target in path:
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in done:
                visit(target, path + [target])
        done.add(name)

    done: set[str] = set()
    for name in MODULES:
        if name not in done:
            visit(name, [name])
    # A package imports its own modules from __init__ only for what it re-exports: not a circle.
    circles = [c for c in circles if not c.split(" -> ")[0].count(".") < 2]
    assert not circles, sorted(set(circles))


def test_the_circle_check_sees_every_kind_of_import():
    """An import inside a function or under TYPE_CHECKING is an edge of the graph."""
    local = "def f():\n    from .weights import ResolvedWeights\n"
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .weights import ResolvedWeights\n"
    for source in (local, typing_only):
        assert "resnet_batch.model.weights" in imports_in(source, "resnet_batch.model")


def test_only_the_run_layer_knows_ray_and_only_the_pipeline_ray_data():
    knows_ray = {n for n in MODULES if any(m == "ray" or m.startswith("ray.") for m in imports(n))}
    assert knows_ray and all(layer(n) == "run" for n in knows_ray), sorted(knows_ray)
    knows_ray_data = {n for n in MODULES if any(m == "ray.data" or m.startswith("ray.data.") for m in imports(n))}
    # ray_compat reaches Ray Data's developer API for the pipeline, and nothing else.
    assert knows_ray_data == {"resnet_batch.run.pipeline", "resnet_batch.run.ray_compat"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name):
    """In physical lines, decorators and docstrings included: at most MAX_MODULE_LINES a
    module and MAX_FUNCTION_LINES a function."""
    text = MODULES[name].read_text()
    lines = len(text.splitlines())
    long = [f"the module: {lines} lines"] if lines > MAX_MODULE_LINES else []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            size = (node.end_lineno or first) - first + 1
            long += [f"{node.name}: {size} lines"] if size > MAX_FUNCTION_LINES else []
    assert not long, long


def test_the_run_layer_is_the_job_on_ray_alone():
    """run/ holds the job on Ray; the command line (cli/) and what a job is asked to do
    (config/) are layers of their own."""
    lines = sum(len(p.read_text().splitlines()) for p in (PACKAGE / "run").rglob("*.py"))
    assert lines < MAX_RUN_LINES, f"run/ is {lines} lines"


def test_tests_and_benches_use_only_public_names():
    private = []
    for path in [*sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("resnet_batch"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not private, private


# String literals equal to a column name that mean something else there.
OTHER_MEANINGS = {
    ("resnet_batch.output.writer", "error"),
    ("resnet_batch.config.options", "error"),  # --mode error
    ("resnet_batch.model.hf", "height"),  # a Hugging Face preprocessor's size key
    ("resnet_batch.review.export", "image"),
}  # Label Studio's task field


def test_column_names_are_spelled_only_in_the_column_table():
    from resnet_batch.core.columns import RESERVED_COLUMNS

    spelled = []
    for name, path in MODULES.items():
        if name == "resnet_batch.core.columns":
            continue
        for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            text = token.string
            if (
                token.type == tokenize.STRING
                and text[:1] in "\"'"
                and text[1:-1] in RESERVED_COLUMNS
                and (name, text[1:-1]) not in OTHER_MEANINGS
            ):
                spelled.append(f"{name}:{token.start[0]} {text}")
    assert not spelled, spelled


def test_no_shims_one_import_path_per_module():
    """No module stands in for another (a package __getattr__, an import hook): each name
    has one home."""
    code = "import sys; before = list(sys.meta_path); import resnet_batch; assert sys.meta_path == before"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, "importing the package installs no import hook: " + result.stderr
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        lazy = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"]
        assert not lazy, f"{name} resolves names lazily (a shim)"
    for old in ("pipeline", "features", "schema", "check", "columns"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"resnet_batch.{old}")


@pytest.mark.parametrize("column", ["margin", "entropy", "needs_review", "c3", "spatial_c5", "scale", "valid", "image"])
def test_a_manifest_column_named_like_an_output_column_is_refused(tmp_path, column):
    from resnet_batch.core.errors import UsageError
    from resnet_batch.data.manifests import read_manifest

    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,{column}\n/x/a.jpg,1\n")
    with pytest.raises(UsageError, match=f"clash with output columns: {column}$"):
        read_manifest(str(manifest))


def test_the_architecture_module_table_is_the_tree():
    """ARCHITECTURE.md's module table names every module of the package, in its folder, and
    nothing that is gone."""
    listed, folder = set(), None
    for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines():
        heading = re.match(r"\| \*\*([\w/]+)/\*\* \|", line)
        if heading:
            folder = heading.group(1)
        row = re.match(r"\| `(\w+\.py)` \|", line)
        if row and folder:
            listed.add(f"{folder}/{row.group(1)}")
    tree = {str(p.relative_to(PACKAGE)) for p in PACKAGE.glob("*/**/*.py") if p.name != "__init__.py"}
    assert listed == tree, {"missing from the table": sorted(tree - listed), "not in the tree": sorted(listed - tree)}


def test_the_architecture_picture_is_the_layers():
    """ARCHITECTURE.md's picture of the layers names each one, top layer first, and only those."""
    text = (ROOT / "ARCHITECTURE.md").read_text().split("## The layers", 1)[1]
    picture = text.split("```", 2)[1]
    drawn = re.findall(r"^\s{2}(\w+)/\s", picture, flags=re.M)
    assert drawn == LAYERS[::-1]
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()) == sorted(LAYERS)


def test_stages_report_through_protocols_not_actor_handles():
    """Below run/, nothing calls a Ray actor's method: stages report through core/reporting.py."""
    remote = [
        f"{name}:{line}"
        for name, path in MODULES.items()
        if layer(name) not in ("run", None)
        for line, text in enumerate(path.read_text().splitlines(), 1)
        if ".remote(" in text
    ]
    assert not remote, remote


RAY_PRIVATE = re.compile(
    r"_generator_backpressure|\._create_executor|\._build_bundle_iterator|"
    r"ray\._private|ray\.\w+(\.\w+)*\._internal|_internal\b|iter_internal_ref_bundles|ray\.data\.block\b"
)


def test_rays_private_api_is_reached_from_one_module():
    """ray._private, ray.*._internal and Ray Data's developer API: run/ray_compat.py only (and the
    tests' tests/ray_internals.py)."""
    files = [
        p for p in sorted(ROOT.glob("*/**/*.py")) if p.parts[len(ROOT.parts)] in ("resnet_batch", "tests", "bench")
    ]
    allowed = {PACKAGE / "run" / "ray_compat.py", ROOT / "tests" / "ray_internals.py", Path(__file__).resolve()}
    found = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in files
        if p not in allowed
        for n, text in enumerate(p.read_text().splitlines(), 1)
        if RAY_PRIVATE.search(text)
    ]
    assert not found, found


def test_another_ray_version_is_named_in_one_line():
    from resnet_batch.run.ray_compat import RAY_SERIES, version_warning

    assert version_warning(f"{RAY_SERIES}.0") is None and version_warning(f"{RAY_SERIES}.3") is None
    warning = version_warning("2.61.0")
    assert warning is not None and "\n" not in warning
    assert warning.startswith(f"resnet-batch was written for Ray {RAY_SERIES} and this is Ray 2.61.0")
    assert version_warning(f"{RAY_SERIES}1.0") is not None  # 2.601 is not 2.60


def test_the_command_line_never_imports_ray():
    """cli/ parses, configures and shows; what it needs of Ray, run/ does (Ray is not reached
    through sys.modules either), and `--help` or `models` never load it."""
    command_line = [n for n in MODULES if layer(n) == "cli"]
    assert command_line
    for name in command_line:
        assert not any(m == "ray" or m.startswith("ray.") for m in imports(name)), name
        assert "sys.modules" not in MODULES[name].read_text(), name
    code = "import sys, resnet_batch.cli.main; print('ray' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert loaded.stdout.strip() == "False", loaded.stderr
