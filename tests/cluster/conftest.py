"""A real Ray cluster on this machine for the `--engine ray` tests: a head node and one worker
node, one CPU each, started once per test module and stopped after it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class RayCluster:
    """The cluster's head address (what --address takes), and the cluster itself, so that a
    test can add and remove worker nodes (ray.cluster_utils.Cluster)."""

    address: str
    cluster: Any


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    pytest.importorskip("ray")
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield RayCluster(cluster.address, cluster)
    finally:
        if ray.is_initialized():  # a test that failed while connected
            ray.shutdown()
        cluster.shutdown()
