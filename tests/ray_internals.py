"""Ray's private API as the tests reach it: a started node's class, the GCS's actors, and
what `ray up` does with a launcher config. The package's own uses are in run/ray_compat.py."""

from __future__ import annotations


def node_class():
    """The class of a node this process started (its processes, how Ray stops each kind)."""
    import ray._private.node

    return ray._private.node.Node


def alive_actor_nodes(class_part: str) -> set[str]:
    """Node ids hosting a live actor whose class name contains `class_part`, from the GCS
    (no dashboard needed)."""
    from ray._private.state import actors

    return {
        a["Address"]["NodeID"] for a in actors().values() if a["State"] == "ALIVE" and class_part in a["ActorClassName"]
    }


def validate_launcher_config(config: dict) -> None:
    """What `ray up` does with a cluster launcher config: fill in the defaults, validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))
