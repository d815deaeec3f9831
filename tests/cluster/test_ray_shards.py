"""Specification of an on-disk index built with `--engine ray`: Ray tasks fill its shards, the
driver merges them, and the index is the one the local engine builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import clustered_vectors

from clipcli.store import ondisk_ivfpq

DIM = 64


def build(folder: Path, vectors: np.ndarray, **options) -> object:
    folder.mkdir()
    ids = np.arange(len(vectors), dtype=np.int64) * 3
    chunks = ((ids[at : at + 2500], vectors[at : at + 2500]) for at in range(0, len(ids), 2500))
    return ondisk_ivfpq.build(
        folder / "vectors.faiss", chunks, vectors[:5000], dim=DIM, count=len(ids), **options
    )


def lists_bytes(folder: Path) -> bytes:
    (data,) = folder.glob("*.ivfdata")
    return data.read_bytes()


@pytest.mark.ray
def test_shards_filled_by_ray_tasks_merge_into_the_lists_a_local_build_writes(
    ray_cluster, tmp_path: Path
) -> None:
    import ray

    from clipcli.cluster import ray_shards

    vectors = clustered_vectors(10_000, DIM, clusters=40)
    local = build(tmp_path / "local", vectors)
    on_ray = build(
        tmp_path / "ray", vectors, add_in_parallel=ray_shards.shard_filler(ray_cluster.address)
    )
    assert not ray.is_initialized()  # the connection made for the build is closed after it
    assert on_ray.ntotal == local.ntotal == 10_000
    assert lists_bytes(tmp_path / "ray") == lists_bytes(tmp_path / "local")
    for query in clustered_vectors(5, DIM, clusters=40, seed=1):
        assert ondisk_ivfpq.search(on_ray, query, 10)[1].tolist() == (
            ondisk_ivfpq.search(local, query, 10)[1].tolist()
        )
    assert not list((tmp_path / "ray").glob(".vectors-build-*"))  # the shards are gone


@pytest.mark.ray
def test_index_on_ray_with_the_on_disk_layout_fills_its_shards_on_the_cluster(
    cli, ray_cluster, tmp_path: Path, model_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipcli.cluster import ray_shards
    from clipcli.shapes import write_sample_folder

    photos = tmp_path / "photos"
    write_sample_folder(photos, 24, seed=11)
    jobs: list[Path] = []
    real = ray_shards.fill_shards

    def recorded(shard_jobs) -> None:
        real(job for job in shard_jobs if not jobs.append(job[2]))

    monkeypatch.setattr(ray_shards, "fill_shards", recorded)
    options = [*model_args, "--precision", "fp32", "--layout", "ivfpq", "--json"]
    for where, engine in (("local", []), ("ray", ["--engine", "ray"])):
        address = ["--address", ray_cluster.address] if engine else []
        result = cli("index", photos, "--index", tmp_path / where, *options, *engine, *address)
        assert result.exit_code == 0, result.stderr
    assert len(jobs) == 1  # one shard: the ray run's; the local run filled its own here
    assert lists_bytes(tmp_path / "ray") == lists_bytes(tmp_path / "local")
    target = sorted(photos.iterdir())[5]
    for where in ("local", "ray"):
        result, hits = cli.json("search", "--image", target, "--index", tmp_path / where)
        assert result.exit_code == 0, result.stderr
        assert hits[0]["path"] == str(target)
