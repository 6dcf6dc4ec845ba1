"""The model layer: ResNet backbones and what they emit.

One record per architecture and per torchvision release (registry.py), the networks
(models.py), weights resolved from torchvision names, checkpoints (loaded with
weights_only=True) or the Hugging Face hub (weights.py, hf.py), what a model actor runs
with and the precision "auto" stands for (settings.py), what a batch costs in memory
(memory.py), the class Ray starts as a model actor (actor.py), the block predictor it holds
(inference.py; null.py for --model none) and the network that predictor runs (network.py).
Torch is imported by inference.py, network.py and models.py, and by checkpoints.py to read
a checkpoint; never by the driver otherwise. Imports core/, data/ and device/.
"""
