"""The import paths of the flat layout (before the layer subpackages), kept for one release.

`import resnet_batch.pipeline` (and `python -m resnet_batch.cli`) still work; each warns
with a DeprecationWarning naming the new path. The old name is an alias: it is the new
module itself, so monkeypatching through either reaches the same objects.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "errors": "core.errors", "storage": "core.storage", "pathset": "core.pathset", "schema": "core.columns",
    "data.identity": "core.identity",
    "sources": "data.sources", "decode": "data.decode", "device_decode": "data.device_decode",
    "preprocessing": "data.preprocessing",
    "registry": "model.registry", "weights": "model.weights", "models": "model.models", "hf": "model.hf",
    "inference": "model.inference", "model_stage": "model.settings",
    "writer": "output.writer", "features": "output.features",
    "report": "review.report", "export": "review.export", "neighbors": "review.neighbors",
    "evaluate": "review.evaluate",
    "cli": "run.cli", "config": "run.config", "pipeline": "run.job", "saving": "run.saving",
    "progress": "run.progress", "summary": "run.summary", "console": "run.console", "ray_session": "run.ray_session",
    "submit": "run.submit", "listing": "run.listing", "check": "run.check", "columns": "run.description",
}
REMOVED_IN = "0.2.0"


class OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, package: str):
        self.targets = {f"{package}.{old}": f"{package}.{new}" for old, new in MOVED.items()}

    def find_spec(self, fullname, path, target=None):
        if fullname in self.targets:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        # The import system hands back whatever sys.modules holds under the name once this
        # returns: the new module, not the placeholder.
        sys.modules[module.__name__] = importlib.import_module(self._new_name(module.__name__))

    def get_code(self, fullname):  # python -m OLD
        return compile(f"import runpy\nrunpy.run_module({self._new_name(fullname)!r}, run_name='__main__')",
                       fullname, "exec")

    def is_package(self, fullname) -> bool:
        return False

    def _new_name(self, old: str) -> str:
        new = self.targets[old]
        warnings.warn(f"{old} is now {new}; the old path goes in resnet-batch {REMOVED_IN}", DeprecationWarning,
                      stacklevel=3)
        return new


def install(package: str) -> None:
    if not any(isinstance(finder, OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(OldPaths(package))
