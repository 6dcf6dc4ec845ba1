"""The data layer: from an INPUT argument to model-ready pixels.

Inputs are cut into read units (input_plan.py) and listed (sources.py, directories.py:
folders, globs, object-store prefixes; manifests.py, shards.py: manifests and tar shards),
read (image_bytes.py) and decoded within limits (decode.py, limits.py; on a GPU, device/
decodes JPEGs), then resized as the weights' own transforms do (preprocessing.py). Each
stage is a plain callable on `dict[str, np.ndarray]` batches. Imports only core/.
"""
