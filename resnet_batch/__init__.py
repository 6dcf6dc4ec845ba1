"""resnet-batch: batch image labeling and embedding extraction with Ray Data.

The package is in layers, each importing only those below it: core/ (shared vocabulary),
data/ (inputs to pixels), device/ (a GPU's data path), model/ (backbones), output/
(Parquet), review/ (tools on a finished output), config/ (what a job is asked to do), run/
(the job on Ray, the only layer that knows Ray) and cli/ (the command line).
"""

import time

__version__ = "0.1.0"
# When this command began, for its clock and its summary's wall time: the package is the
# first thing `resnet-batch` imports (a shell's time before it, e.g. `sleep 20; resnet-batch
# ...`, is not the job's).
LAUNCHED_AT = time.time()
