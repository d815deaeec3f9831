"""The shards of an on-disk index (store.ondisk_ivfpq) filled by Ray tasks, for `clipcli index
--engine ray`: encoding every vector into its list is the long part of a build, and it is one
independent task per shard.

Each task gets the trained index (put on the cluster once) and its chunk's vectors, and
sends the filled shard back as bytes, which the driver writes where the build merges them:
the nodes need share no disk with the driver. At most as many chunks as the cluster has
cores, and MAX_IN_FLIGHT, are out at a time, so the driver holds a few chunks whatever the
index's size. A task lost with its node is run again by Ray.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from clipcli.cluster import ray_session
from clipcli.store import ondisk_ivfpq
from clipcli.store.ondisk_ivfpq import AddShards, ShardJob

# Chunks sent and not yet back: each is in the object store until its shard returns (a
# catalog's chunk of 100k 512-d vectors is 200 MB), so a large cluster does not mean a driver
# holding a chunk per core.
MAX_IN_FLIGHT = 8


def shard_filler(address: str | None) -> AddShards:
    """ondisk_ivfpq.build's add_in_parallel for the Ray cluster at `address` (see
    ray_session.connected; a connection the run holds already is used)."""

    def fill_on_ray(jobs: Iterable[ShardJob]) -> None:
        with ray_session.connected(address), ray_session.cluster_failures():
            fill_shards(jobs)

    return fill_on_ray


def fill_shards(jobs: Iterable[ShardJob]) -> None:
    """Write every job's shard, filled by a Ray task (Ray connected)."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=-1)(ondisk_ivfpq.filled_copy)
    slots = max(1, min(MAX_IN_FLIGHT, int(ray.cluster_resources().get("CPU", 1))))
    trained_refs: dict[str, Any] = {}
    pending: dict[Any, ShardJob] = {}

    def finish(done: list[Any]) -> None:
        for ref in done:
            shard = ray.get(ref)
            _, _, out = pending.pop(ref)
            np.asarray(shard, dtype=np.uint8).tofile(out)

    for job in jobs:
        trained, (ids, rows), _ = job
        if str(trained) not in trained_refs:
            trained_refs[str(trained)] = ray.put(np.fromfile(trained, dtype=np.uint8))
        if len(pending) >= slots:
            done, _ = ray.wait(list(pending), num_returns=1)
            finish(done)
        chunk = (np.ascontiguousarray(ids), np.ascontiguousarray(rows))
        pending[task.remote(trained_refs[str(trained)], chunk)] = job
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        finish(done)
