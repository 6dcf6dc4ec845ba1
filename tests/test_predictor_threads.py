"""Concurrent calls on one Predictor, as model actors make them (single-threaded forwards side
by side on CPU, CUDA streams on a GPU), give the sequential results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from resnet_batch.core.columns import OutputColumns
from resnet_batch.data.decode import DecodeStage
from resnet_batch.model.inference import Predictor
from resnet_batch.model.settings import InferenceSettings
from resnet_batch.model.weights import resolve_weights


def check_concurrent_equals_sequential(device: str, reference_images, ckpt, tolerance: float) -> None:
    resolved = resolve_weights("resnet18", str(ckpt))
    decoded = DecodeStage(resolved.preprocessing)({"path": np.array([str(p) for p in reference_images], dtype=object)})
    half = len(reference_images) // 2
    batches = [{k: v[:half] for k, v in decoded.items()}, {k: v[half:] for k, v in decoded.items()}]
    predictor = Predictor(
        InferenceSettings(weights=resolved, precision="fp32", top_k=3, device=device),
        schema=OutputColumns(512).schema(),
    )
    expected = [predictor(b).to_pydict() for b in batches]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            for got, want in zip(pool.map(predictor, batches), expected, strict=False):
                got = got.to_pydict()
                assert got["path"] == want["path"] and got["error"] == want["error"]
                np.testing.assert_allclose(
                    np.array(got["embedding"]), np.array(want["embedding"]), rtol=tolerance, atol=tolerance
                )


def test_concurrent_calls_cpu(reference_images, resnet18_ckpt):
    check_concurrent_equals_sequential("cpu", reference_images, resnet18_ckpt, tolerance=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_concurrent_calls_gpu_streams(reference_images, resnet18_ckpt):
    check_concurrent_equals_sequential("cuda", reference_images, resnet18_ckpt, tolerance=1e-3)


def test_concurrent_calls_through_ray_data(ray_local, reference_images, resnet18_ckpt):
    """The job's actor pool (two calls at once on threads of the actor): every row once, equal
    to a direct call."""
    import ray.data

    from resnet_batch.run.pipeline import model_pool

    resolved = resolve_weights("resnet18", str(resnet18_ckpt))
    decoded = DecodeStage(resolved.preprocessing)({"path": np.array([str(p) for p in reference_images], dtype=object)})
    settings = InferenceSettings(weights=resolved, precision="fp32", top_k=3, device="cpu", threads=1)
    schema = OutputColumns(512).schema()
    rows = [{k: v[i] for k, v in decoded.items()} for i in range(len(reference_images))] * 4
    out = (
        ray.data.from_items(rows, override_num_blocks=8)
        .map_batches(
            Predictor,
            fn_constructor_kwargs={"settings": settings, "schema": schema},
            batch_size=3,
            batch_format="numpy",
            compute=model_pool(1, calls_per_actor=2),
            num_cpus=1,
        )
        .to_pandas()
    )
    want = Predictor(settings, schema)(decoded).to_pandas().set_index("path")
    assert len(out) == len(rows) and sorted(out["path"]) == sorted(r["path"] for r in rows)
    for _, row in out.iterrows():
        np.testing.assert_allclose(row["embedding"], want.loc[row["path"], "embedding"], rtol=1e-5, atol=1e-6)


def test_pool_layout_cpu(ray_local):
    """CPU nodes, as the plan reads them from the running cluster: one actor per node, one
    single-threaded call per core; a compiled forward (not thread-safe) gets one call on all
    the cores instead."""
    from resnet_batch.config.label_config import LabelConfig
    from resnet_batch.config.plan import make_plan
    from resnet_batch.model.weights import resolve_weights
    from resnet_batch.run import ray_session

    cores = int(ray_local.cluster_resources()["CPU"])
    cluster = ray_session.cluster()
    assert (cluster.gpus, cluster.cpu_nodes, cluster.cpus_per_node) == (0, 1, cores)
    cfg = LabelConfig.of(inputs=("x",), output="y", model="resnet18", weights="none", device="cpu")
    resolved = resolve_weights("resnet18", "none")

    def layout(cfg):
        plan = make_plan(cfg, resolved, cluster)
        return plan.actors, plan.gpus_per_actor, plan.calls_per_actor, plan.threads_per_call

    assert layout(cfg) == (1, 0, cores, 1)
    assert layout(cfg.replace(threads_per_worker=3))[2] == 3
    assert layout(cfg.replace(compile=True)) == (1, 0, 1, cores)
