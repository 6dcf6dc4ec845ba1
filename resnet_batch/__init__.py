"""resnet-batch: batch image labeling and embedding extraction with Ray Data."""

__version__ = "0.1.0"
