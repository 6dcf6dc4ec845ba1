"""The model layer: ResNet backbones and what they emit.

The architectures and their feature widths (registry.py, models.py), weights resolved from
torchvision names, checkpoints (loaded with weights_only=True) or the Hugging Face hub
(weights.py, hf.py), precision and device choice (model_stage.py), and the batch predictor
a model actor holds (inference.py). Imports core/ and data/.
"""
