"""Run by test_gpu_nodes.py in its own process: a label job on a Ray whose nodes declare 8
GPUs each (one local node, or two cluster_utils nodes), planned and placed as on GPU
nodes, with model actors that compute on the CPU (this machine has no GPU).

Prints one JSON line: the plan in words, the summary's counts and each model actor's
placement (node id, the GPU ids Ray gave it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

import ray
from ray.cluster_utils import Cluster

from resnet_batch.cli.summary_text import summary_lines
from resnet_batch.config.label_config import LabelConfig
from resnet_batch.run import job

GPUS_PER_NODE = 8
CPUS_PER_NODE = 12  # declared: a model actor's CPU each, and a few for decode tasks


class PlanOnDeclaredGpus:
    """The job's own plan, its model actors computing on the CPU: every resource, count and
    placement is the plan's; only the device the forward runs on is not."""

    def __init__(self, make_plan):
        self.make_plan, self.lines = make_plan, []

    def __call__(self, *args, **kwargs):
        planned = self.make_plan(*args, **kwargs)
        self.lines = planned.lines()
        model = dataclasses.replace(planned.inference, device="cpu", precision="fp32", threads=1)
        return dataclasses.replace(planned, inference=model)


def main(nodes: int, src: str, out: str) -> None:
    cluster = None
    if nodes == 1:
        ray.init(num_cpus=CPUS_PER_NODE, num_gpus=GPUS_PER_NODE, logging_level=logging.WARNING)
    else:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for _ in range(nodes):
            cluster.add_node(num_cpus=CPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.WARNING)
    planned = PlanOnDeclaredGpus(job.make_plan)
    job.make_plan = planned
    cfg = LabelConfig.of(
        inputs=(src,), output=out, model="resnet18", weights="none", batch_size=2, top_k=1, checkpoint_every=1
    )
    summary = job.run_label(cfg)
    print(
        json.dumps(
            {
                "plan": planned.lines,
                "complete": summary.complete,
                "inputs": summary.inputs,
                "rows": summary.rows_in_output,
                "errors": summary.errors,
                "placements": summary.timeline.placements,
                "lines": summary_lines(summary),
            }
        )
    )
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
