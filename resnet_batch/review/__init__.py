"""The review layer: tools that read a finished output.

The review queue (review.py), the HTML report (report.py), exports to ImageFolder, CSV and
Label Studio (export.py), near-duplicates (neighbors.py) and accuracy against a labeled
folder (evaluate.py). Imports core/, data/, model/ and output/; never Ray.
"""


def __getattr__(name: str):
    # The flat layout's resnet_batch.review module is now review/review.py: its names,
    # reached through the package, still resolve for one release.
    import importlib
    import warnings

    if name.startswith("__") or name == "review":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    review = importlib.import_module(f"{__name__}.review")
    if not hasattr(review, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"resnet_batch.review.{name} is now resnet_batch.review.review.{name}", DeprecationWarning,
                  stacklevel=2)
    return getattr(review, name)
