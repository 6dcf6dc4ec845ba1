"""The data layer: from an INPUT argument to model-ready pixels.

Inputs are listed (sources.py: folders, globs, object-store prefixes, manifests, tar
shards), read and decoded with a pixel limit (decode.py, or on the GPU in
device_decode.py), then resized and normalised as the weights' own transforms do
(preprocessing.py). Each stage is a plain callable on `dict[str, np.ndarray]` batches.
Imports only core/.
"""
