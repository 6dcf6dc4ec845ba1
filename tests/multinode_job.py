"""Run by test_multinode.py in its own process: a 3-node Ray cluster on this machine, a label
job on it, and the worker node that hosts a model actor removed mid-run.

Prints one JSON line with what happened.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.run.job import run_label
from tests import ray_internals


def main(src: str, out: str) -> None:
    # A lost node is declared dead after 3 missed health checks half a second apart (Ray's
    # defaults wait 3 s between checks, 5 of them): the recovery, not the wait, is under test.
    health = {"health_check_period_ms": 500, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": health})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    cfg = LabelConfig.of(
        inputs=(src,),
        output=out,
        model="resnet18",
        weights="none",
        precision="fp32",
        batch_size=2,
        rows_per_file=4,
        top_k=1,
    )
    result: list = []
    failure: list = []

    def run():
        try:
            result.append(run_label(cfg))
        except Exception as exc:  # reported, so the test shows why
            failure.append(f"{type(exc).__name__}: {exc}"[-2000:])

    job = threading.Thread(target=run)
    job.start()
    deadline = time.monotonic() + 240
    while len(list(Path(out).glob("part-*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    files_before_kill = len(list(Path(out).glob("part-*.parquet")))
    actor_nodes = ray_internals.alive_actor_nodes("Predictor")
    victim = next(w for w in workers if w.node_id in actor_nodes)
    cluster.remove_node(victim, allow_graceful=False)
    cluster.add_node(num_cpus=2)  # what an autoscaler would do
    job.join(timeout=400)
    summary = result[0] if result else None
    print(
        json.dumps(
            {
                "killed_node_had_actor": victim.node_id in actor_nodes,
                "files_before_kill": files_before_kill,
                "complete": bool(summary and summary.complete),
                "inputs": summary.inputs if summary else None,
                "rows": summary.rows_in_output if summary else None,
                "failure": failure[0] if failure else None,
            }
        )
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
