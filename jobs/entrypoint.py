"""Ray Jobs entrypoint: run a label job from a config file in this folder.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/entrypoint.py jobs/resnet50-gpu-bucket.yaml [--flags]

`resnet-batch submit` builds the same entrypoint for you; this file is for clusters that
take a plain Python command (KubeRay RayJob, Anyscale, CI).
"""

import sys

from resnet_batch.cli.main import main

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python jobs/entrypoint.py CONFIG.yaml [label flags...]")
    sys.exit(main(["label", "--config", sys.argv[1], *sys.argv[2:]]))
