"""A running job's progress, in one home: the stages' reports gathered by a counter actor
(counter.py), the share of decoding it sets (decode_share.py), what a waiting job waits for
(resources.py), and the driver's view of it all as a Snapshot (watch.py, snapshot.py)."""
