"""Cluster definitions and job configs: valid for the tools that consume them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from resnet_batch.config.config_file import load_config_file
from resnet_batch.config.label_config import LabelConfig

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_launcher_yaml_validates_against_rays_schema():
    config = yaml.safe_load((ROOT / "cluster" / "aws-gpu.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    gpu_types = [n for n, t in config["available_node_types"].items() if n.startswith("gpu")]
    assert gpu_types and config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    # And what `ray up` itself does: fill in the provider's defaults, then validate.
    from tests.ray_internals import validate_launcher_config

    validate_launcher_config(config)


def _worker_groups(cluster_spec):
    groups = cluster_spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["groupName"] and "rayStartParams" in group
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] and container["name"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "1"
    return groups


def _head(cluster_spec):
    head = cluster_spec["headGroupSpec"]
    assert "rayStartParams" in head and head["rayStartParams"]["num-cpus"] == "0"
    container = head["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} >= {6379, 8265}
    assert {"name": "RAY_AUTH_MODE", "value": "token"} in container["env"]


def test_kuberay_rayjob_has_required_fields():
    doc = yaml.safe_load((ROOT / "cluster" / "kuberay-rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["metadata"]["name"]
    spec = doc["spec"]
    assert spec["entrypoint"].startswith("resnet-batch label") and "--mode resume" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__
    _head(spec["rayClusterSpec"])
    _worker_groups(spec["rayClusterSpec"])


def test_kuberay_raycluster_has_required_fields():
    doc = yaml.safe_load((ROOT / "cluster" / "kuberay-raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    _head(doc["spec"])
    _worker_groups(doc["spec"])


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "jobs").glob("*.yaml")))
def test_job_configs_are_valid_label_configs(name):
    cfg = LabelConfig.from_sources(load_config_file(str(ROOT / "jobs" / name)), {})
    assert cfg.inputs and cfg.output
