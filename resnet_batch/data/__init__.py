"""The data layer: what one input is, and how its bytes are found.

An input is a normalised local path or a full URI; a tar member is its shard plus the
member's name, never a file system path of its own (identity.py). Modules here know
nothing of models, outputs or Ray.
"""
