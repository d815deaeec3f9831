"""`clipcli embed --engine ray`: the same shards as the local engine (rows in the order the
batches came back), and the usage errors of the engine's options."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import snapshot
from shard_sets import SHAPES_FP32, shapes_library


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    shapes_library(tmp_path / "photos", 6, dated=False)
    return tmp_path / "photos"


def rows_by_path(out: Path) -> dict[str, tuple[dict, np.ndarray]]:
    found = {}
    for number in range(len(list((out / "img_emb").glob("*.npy")))):
        table = pq.read_table(out / "metadata" / f"metadata_{number}.parquet").to_pylist()
        vectors = np.load(out / "img_emb" / f"img_emb_{number}.npy")
        found.update(
            (row["image_path"], (row, vector)) for row, vector in zip(table, vectors, strict=True)
        )
    return found


def test_without_ray_the_ray_engine_says_how_to_install_it(cli, photos, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    before = snapshot(tmp_path)

    result = cli("embed", photos, tmp_path / "shards", "--engine", "ray", *SHAPES_FP32)

    assert result.exit_code == 2
    assert "pip install 'clipcli[ray]'" in result.stderr
    assert snapshot(tmp_path) == before


def test_an_address_needs_the_ray_engine(cli, photos, tmp_path):
    result = cli("embed", photos, tmp_path / "shards", "--address", "auto", *SHAPES_FP32)

    assert result.exit_code == 2
    assert "--engine ray" in result.stderr
    assert not (tmp_path / "shards").exists()


def test_an_unknown_engine_is_a_usage_error(cli, photos, tmp_path):
    result = cli("embed", photos, tmp_path / "shards", "--engine", "spark", *SHAPES_FP32)

    assert result.exit_code == 2
    assert "unknown engine 'spark'" in result.stderr


@pytest.mark.ray
def test_the_ray_engine_writes_the_rows_and_vectors_the_local_one_does(cli, photos, tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("clipcli.cluster.ray_embed")
    shards = ["--shard-size", "4", "--batch-size", "2", *SHAPES_FP32]
    local = cli("embed", photos, tmp_path / "local", *shards)
    assert local.exit_code == 0, local.stderr

    on_ray = cli("embed", photos, tmp_path / "ray", "--engine", "ray", *shards)

    assert on_ray.exit_code == 0, on_ray.stderr
    expected, found = rows_by_path(tmp_path / "local"), rows_by_path(tmp_path / "ray")
    assert sorted(found) == sorted(expected) and len(found) == 6
    for path, (row, vector) in found.items():
        assert row == expected[path][0]
        assert np.array_equal(vector, expected[path][1])
