"""The device layer: what runs on a model actor's GPU before the forward.

JPEG decoders behind one interface (torchvision's nvJPEG, nvImageCodec, and the host as
the fallback: decoders.py), the batched resize and center crop (resize.py), the feed that
runs a batch's data path on a stream of its own (feed.py), the check each actor makes of
that path at warm-up (self_check.py), and copies and timing on streams (streams.py).
Everything else about CUDA (the context, precision, the forward) is the model layer's.
"""
