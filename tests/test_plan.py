"""The execution plan: a pure function of the job's arguments, its weights and the cluster."""

from __future__ import annotations

import dataclasses

import pytest

from resnet_batch.config.label_config import LabelConfig
from resnet_batch.config.plan import BLOCKS_PER_BATCH, Cluster, make_plan
from resnet_batch.core.errors import UsageError
from resnet_batch.model.weights import resolve_weights

CFG = LabelConfig.of(inputs=("x",), output="y", model="resnet18", weights="none")


@pytest.fixture(scope="module")
def resolved():
    return resolve_weights("resnet18", "none")


def test_a_gpu_cluster_gets_an_actor_per_gpu_decoding_jpegs(resolved):
    plan = make_plan(CFG, resolved, Cluster(gpus=2, cpu_nodes=1, cpus_per_node=16, cpu_bf16=False))
    assert (plan.actors, plan.gpus_per_actor, plan.calls_per_actor, plan.cpus_per_actor) == (2, 1, 2, 1)
    assert plan.inference.device == "cuda" and plan.decode_on_device
    assert plan.batch_size == 256 and plan.block_rows == 256 * BLOCKS_PER_BATCH
    assert plan.inference.precision == "auto"  # the GPU's kind decides, on its node
    assert not make_plan(CFG.replace(device="cpu"), resolved, Cluster(2, 1, 16, False)).decode_on_device


@pytest.mark.parametrize("bf16, precision, batch", [(True, "bf16", 64), (False, "fp32", 32)])
def test_auto_precision_on_cpus_is_decided_once_by_the_model_nodes(resolved, bf16, precision, batch):
    plan = make_plan(CFG, resolved, Cluster(gpus=0, cpu_nodes=3, cpus_per_node=8, cpu_bf16=bf16))
    # The actors get the precision the batch size was chosen for, never "auto" to decide again.
    assert plan.inference.precision == precision and plan.batch_size == batch
    assert (plan.actors, plan.calls_per_actor, plan.threads_per_call) == (3, 8, 1)
    assert make_plan(CFG.replace(precision="fp32"), resolved, Cluster(0, 3, 8, bf16)).inference.precision == "fp32"


def test_explicit_arguments_win(resolved):
    cfg = CFG.replace(batch_size=5, num_workers=7, threads_per_worker=2, io_threads=3)
    plan = make_plan(cfg, resolved, Cluster(0, 2, 4, False), local_inputs=False)
    assert (plan.batch_size, plan.actors, plan.calls_per_actor, plan.io_threads) == (5, 7, 2, 3)
    assert make_plan(CFG, resolved, Cluster(0, 1, 4, False), local_inputs=False).io_threads == 16
    assert make_plan(CFG, resolved, Cluster(0, 1, 4, False)).io_threads == 1


def test_more_model_actors_than_the_cluster_can_place_are_refused(resolved):
    with pytest.raises(UsageError, match=r"--num-workers must be between 1 and 8 \(one model actor per CPU.*got 9"):
        make_plan(CFG.replace(num_workers=9), resolved, Cluster(0, 2, 4, False))
    with pytest.raises(UsageError, match=r"--num-workers must be between 1 and 2 \(one model actor per GPU.*got 3"):
        make_plan(CFG.replace(num_workers=3), resolved, Cluster(2, 1, 16, False))
    assert make_plan(CFG.replace(num_workers=8), resolved, Cluster(0, 2, 4, False)).actors == 8


def test_refusals(resolved):
    with pytest.raises(UsageError, match="--device cuda was requested but the Ray cluster has no GPUs"):
        make_plan(CFG.replace(device="cuda"), resolved, Cluster(0, 1, 4, False))
    lanczos = dataclasses.replace(
        resolved, preprocessing=dataclasses.replace(resolved.preprocessing, interpolation="lanczos")
    )
    assert not lanczos.preprocessing.resizes_on_device
    with pytest.raises(UsageError, match="--decode gpu resizes with"):
        make_plan(CFG.replace(decode="gpu"), lanczos, Cluster(1, 1, 4, False))
    assert not make_plan(CFG, lanczos, Cluster(1, 1, 4, False)).decode_on_device


@pytest.mark.parametrize("nodes, cpus, read_tasks", [(1, 2, 1), (1, 16, 2), (8, 16, 4)])
def test_read_tasks_grow_with_the_cluster_but_never_outrun_decoding(resolved, nodes, cpus, read_tasks):
    # Each read task at once takes a share of decoding's idle-priority CPU.
    assert make_plan(CFG, resolved, Cluster(0, nodes, cpus, False)).read_tasks == read_tasks


def test_the_plan_in_words_for_two_eight_gpu_nodes(resolved):
    """What `label --dry-run` prints: every stage's actors, GPUs and CPUs, batch, decoder, share."""
    cluster = Cluster(gpus=16, cpu_nodes=2, cpus_per_node=64, cpu_bf16=False, gpu_nodes=2)
    lines = make_plan(CFG.replace(gpu_decoder="nvimgcodec", cpu_decode_share=0.4), resolved, cluster).lines()
    assert lines == [
        "plan for 16 GPUs on 2 nodes, 2 nodes with CPUs (64 or more each):",
        "  model: 16 actors, one per GPU, each holding 1 GPU and 1 CPU, 2 calls at once, 4 torch threads per call; "
        "batch 256, precision bf16 where the GPU has it, else fp16 (auto)",
        # 64 cores a node, 8 of them the model actors': 128 // 16 - 1 = 7 decode cores per actor.
        "  decoding: JPEGs in the model actors by nvimgcodec (checked at warm-up), the rest and a share of them by "
        "decode tasks of 1024 rows, 1 CPU each at idle priority, on 7 cores per model actor; share 0.4, fixed",
        "  reading: 4 read tasks at once (0 CPUs, listing and claiming inputs); 1 file fetch thread per decode task",
        "  saving: part files written by tasks of 0 CPUs as batches finish",
        # The batch lives on the GPU: the actor's host side, and a decode task's 1024 crops.
        "  memory: each model actor ~0.5 GiB, each decode task ~1.1 GiB",
    ]
    cpu = make_plan(CFG.replace(decode="cpu"), resolved, cluster).lines()
    assert cpu[2] == (
        "  decoding: on CPUs: decode tasks of 1024 rows, 1 CPU each at idle priority, up to 112 at once "
        "(the CPUs the model actors leave)"
    )
    assert make_plan(CFG, resolved, cluster).inference.gpu_decoder == "auto"
    assert make_plan(CFG.replace(decode="cpu"), resolved, cluster).inference.gpu_decoder is None


def test_a_cpu_cluster_leaves_its_decoding_a_cpu(resolved):
    """The README's local cluster (two 1-CPU workers): one model actor, and the other CPU decodes."""
    small = make_plan(CFG, resolved, Cluster(gpus=0, cpu_nodes=2, cpus_per_node=1, cpu_bf16=False))
    assert small.actors == 1 and small.lines()[2].endswith("up to 1 at once (the CPUs the model actors leave)")
    wide = make_plan(CFG, resolved, Cluster(gpus=0, cpu_nodes=3, cpus_per_node=8, cpu_bf16=False))
    assert wide.actors == 3 and "up to 21 at once" in wide.lines()[2]
    assert make_plan(CFG, resolved, Cluster(gpus=0, cpu_nodes=1, cpus_per_node=1, cpu_bf16=False)).actors == 1
