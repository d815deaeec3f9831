"""The shard files themselves: clip-retrieval's names and dtypes, read back by clipcli's reader
and as embedding-reader reads them, and what an interrupted writer leaves."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from shard_sets import read_like_embedding_reader

from clipcli.shards.layout import (
    MANIFEST_FILE,
    Manifest,
    ShardModel,
    ShardRow,
    digits_for,
    read_manifest,
)
from clipcli.shards.reader import open_shards, read_blocks
from clipcli.shards.writer import ShardWriter

MODEL = ShardModel("clipcli-shapes", "/weights/shapes.pt", "sha256:abc")


def unit_vectors(count: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def rows_for(count: int) -> list[ShardRow]:
    return [
        ShardRow(f"/photos/{i:03d}.jpg", f"{i:064x}", 1000 + i, 10**18 + i, 1.6e9 + i)
        for i in range(count)
    ]


def write_set(folder: Path, count: int, shard_size: int, *, add_at_once: int = 7) -> Manifest:
    vectors, rows = unit_vectors(count), rows_for(count)
    digits = digits_for(-(-count // shard_size))
    with ShardWriter(folder, Manifest(MODEL, None, digits), shard_size) as writer:
        for start in range(0, count, add_at_once):  # batches that straddle the shards
            writer.add(rows[start : start + add_at_once], vectors[start : start + add_at_once])
        return writer.finish()


def test_rows_split_into_shards_of_shard_size_under_clip_retrievals_names(tmp_path):
    manifest = write_set(tmp_path, 25, 10)

    assert sorted(p.name for p in (tmp_path / "img_emb").iterdir()) == [
        "img_emb_0.npy",
        "img_emb_1.npy",
        "img_emb_2.npy",
    ]
    assert sorted(p.name for p in (tmp_path / "metadata").iterdir()) == [
        "metadata_0.parquet",
        "metadata_1.parquet",
        "metadata_2.parquet",
    ]
    shapes = [np.load(tmp_path / "img_emb" / f"img_emb_{n}.npy").shape for n in range(3)]
    assert shapes == [(10, 8), (10, 8), (5, 8)]
    assert [shard.rows for shard in manifest.shards] == [10, 10, 5]
    assert (manifest.rows, manifest.dim, manifest.complete) == (25, 8, True)


def test_an_npy_is_float16_and_the_very_bytes_numpy_saves(tmp_path):
    write_set(tmp_path, 25, 10)
    expected = io.BytesIO()
    np.save(expected, unit_vectors(25)[10:20].astype(np.float16))

    path = tmp_path / "img_emb" / "img_emb_1.npy"
    assert np.load(path).dtype == np.float16
    assert path.read_bytes() == expected.getvalue()


def test_the_parquet_holds_image_path_and_the_files_stats_row_for_row(tmp_path):
    write_set(tmp_path, 25, 10)

    table = pq.read_table(tmp_path / "metadata" / "metadata_2.parquet")
    assert table.column_names == ["image_path", "sha256", "size", "mtime_ns", "taken_at"]
    assert table.to_pylist()[0] == {
        "image_path": "/photos/020.jpg",
        "sha256": f"{20:064x}",
        "size": 1020,
        "mtime_ns": 10**18 + 20,
        "taken_at": 1.6e9 + 20,
    }


def test_shard_numbers_are_padded_to_the_digits_of_the_shard_count(tmp_path):
    write_set(tmp_path, 23, 2)  # 12 shards

    names = sorted(p.name for p in (tmp_path / "img_emb").iterdir())
    assert names[:2] == ["img_emb_00.npy", "img_emb_01.npy"] and names[-1] == "img_emb_11.npy"
    assert sorted(p.name for p in (tmp_path / "metadata").iterdir())[-1] == "metadata_11.parquet"


def test_embedding_reader_reads_every_row_in_order(tmp_path):
    write_set(tmp_path, 23, 2)

    vectors, paths = read_like_embedding_reader(tmp_path)

    assert paths == [row.image_path for row in rows_for(23)]
    assert np.array_equal(vectors, unit_vectors(23).astype(np.float16).astype(np.float32))


def test_the_reader_gives_rows_and_float32_vectors_in_order_a_block_at_a_time(tmp_path):
    write_set(tmp_path, 25, 10)

    shards = open_shards(tmp_path)
    blocks = list(read_blocks(shards, block_rows=4))

    assert (shards.rows, shards.dim, shards.manifest.model) == (25, 8, MODEL)
    assert max(len(block.rows) for block in blocks) == 4
    assert [row for block in blocks for row in block.rows] == rows_for(25)
    vectors = np.concatenate([block.vectors for block in blocks])
    assert vectors.dtype == np.float32
    assert np.array_equal(vectors, unit_vectors(25).astype(np.float16).astype(np.float32))


def test_the_manifest_records_the_model_dim_shards_and_completeness(tmp_path):
    write_set(tmp_path, 25, 10)

    written = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert written["model"] == {
        "name": "clipcli-shapes",
        "pretrained": "/weights/shapes.pt",
        "weights": "sha256:abc",
    }
    assert (written["version"], written["dim"], written["rows"]) == (1, 8, 25)
    assert (written["shard_count"], written["complete"]) == (3, True)


def test_an_interrupted_writer_leaves_whole_shards_and_an_incomplete_manifest(tmp_path):
    vectors, rows = unit_vectors(25), rows_for(25)
    with (
        pytest.raises(KeyboardInterrupt),
        ShardWriter(tmp_path, Manifest(MODEL, None, 1), 10) as writer,
    ):
        writer.add(rows[:15], vectors[:15])
        raise KeyboardInterrupt

    manifest = read_manifest(tmp_path)
    assert (len(manifest.shards), manifest.rows, manifest.complete) == (1, 10, False)
    assert [p.name for p in tmp_path.rglob("*.part")] == []
    assert sorted(p.name for p in (tmp_path / "img_emb").iterdir()) == ["img_emb_0.npy"]

    with ShardWriter(tmp_path, manifest, 10) as writer:  # carries on after the last shard
        writer.add(rows[10:], vectors[10:])
        resumed = writer.finish()
    assert [shard.rows for shard in resumed.shards] == [10, 10, 5]
    assert [row for block in read_blocks(open_shards(tmp_path)) for row in block.rows] == rows


def test_the_next_writer_removes_what_a_killed_one_left_and_nothing_else(tmp_path):
    manifest = write_set(tmp_path, 10, 10)
    left = [
        tmp_path / "img_emb" / ".img_emb_1.npy.1a2b3c4d.part",
        tmp_path / "metadata" / ".metadata_1.parquet.1a2b3c4d.part",
        tmp_path / "img_emb" / "img_emb_1.npy",  # renamed, and killed before the manifest
        tmp_path / f".{MANIFEST_FILE}.5e6f7a8b.part",
    ]
    for path in left:
        path.write_bytes(b"half")
    (tmp_path / "img_emb" / "notes.txt").write_text("someone's")

    ShardWriter(tmp_path, manifest, 10)

    assert [path for path in left if path.exists()] == []
    assert (tmp_path / "img_emb" / "notes.txt").read_text() == "someone's"
    assert (tmp_path / "img_emb" / "img_emb_0.npy").is_file()


def test_a_set_without_manifest_is_read_by_shard_number(tmp_path):
    import pyarrow as pa

    (tmp_path / "img_emb").mkdir()
    (tmp_path / "metadata").mkdir()
    vectors = unit_vectors(6)
    for number, rows in ((0, slice(0, 4)), (1, slice(4, 6))):
        np.save(tmp_path / "img_emb" / f"img_emb_{number}.npy", vectors[rows].astype(np.float16))
        paths = [f"/p/{i}.jpg" for i in range(6)][rows]
        pq.write_table(
            pa.table({"image_path": paths}), tmp_path / "metadata" / f"metadata_{number}.parquet"
        )

    shards = open_shards(tmp_path)
    rows = [row for block in read_blocks(shards) for row in block.rows]

    assert shards.manifest is None and (shards.rows, shards.dim) == (6, 8)
    assert rows == [ShardRow(f"/p/{i}.jpg") for i in range(6)]
