"""The core layer: the vocabulary every other layer shares.

Typed errors (errors.py), what one input is (identity.py: a normalised local path, a full
URI, or a tar shard plus a member name), reading and writing bytes on a local disk or any
fsspec store (storage.py, web.py), 128-bit path sets (pathset.py), the one table of output
columns (columns.py), signals held back (signals.py) and this host's processes
(processes.py). Nothing here imports another layer, torch or Ray.
"""
