"""`clipcli embed`: folders of images straight into shards, the vectors `clipcli index` stores
for the same files, unreadable files skipped, and an interrupted run resumed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TEST_MODEL, snapshot
from shard_sets import SHAPES_FP32, Library, catalog_rows, indexed_library

from clipcli.embed import EmbedJob, embed_folders
from clipcli.media.hashing import file_sha256
from clipcli.shards.layout import MANIFEST_FILE, read_manifest


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Library:
    return indexed_library(tmp_path_factory.mktemp("library"), shared_cache)


def embed(cli, *args: str | Path) -> dict:
    result, report = cli.json("embed", *args)
    assert result.exit_code == 0, result.stderr
    return report


def shard_rows(out: Path) -> list[dict]:
    return [
        row
        for path in sorted((out / "metadata").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]


def shard_vectors(out: Path) -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted((out / "img_emb").glob("*.npy"))])


def test_embed_fp32_stores_the_index_vectors_in_float16_with_the_catalogs_values(
    cli, shared, tmp_path
):
    out = tmp_path / "shards"

    report = embed(cli, shared.photos, out, *SHAPES_FP32, "--shard-size", "10")

    assert (report["embedded"], report["kept"], report["skipped"]) == (25, 0, [])
    assert (report["shards"], report["rows"], report["dim"]) == (3, 25, 64)
    stored = catalog_rows(shared.index)  # id order is the files' sorted order, as embed's
    assert shard_rows(out) == [
        {
            "image_path": r.path,
            "sha256": r.sha256,
            "size": r.size,
            "mtime_ns": r.mtime_ns,
            "taken_at": r.taken_at,
        }
        for r in stored
    ]
    expected = np.stack([r.vector for r in stored]).astype(np.float16)
    assert np.array_equal(shard_vectors(out), expected)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert (manifest["model"]["name"], manifest["complete"], manifest["rows"]) == (
        TEST_MODEL,
        True,
        25,
    )


@pytest.mark.slow
def test_embed_with_the_fastest_backend_agrees_with_what_index_stores(cli, shared, tmp_path):
    index, out = tmp_path / "index", tmp_path / "shards"
    result = cli("index", shared.photos, "--index", index, "--model", TEST_MODEL)
    assert result.exit_code == 0, result.stderr

    embed(cli, shared.photos, out, "--model", TEST_MODEL)

    stored = np.stack([r.vector for r in catalog_rows(index)])
    found = shard_vectors(out).astype(np.float32)
    found /= np.linalg.norm(found, axis=1, keepdims=True)  # float16 moves lengths by ~1e-4
    assert np.sum(found * stored, axis=1).min() >= 0.9999


def test_an_unreadable_file_is_skipped_and_reported(cli, shared, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in shared.paths[:3]:
        (photos / path.name).write_bytes(path.read_bytes())
    (photos / "broken.jpg").write_bytes(b"not a picture at all")

    result, report = cli.json("embed", photos, tmp_path / "shards", *SHAPES_FP32)

    assert result.exit_code == 0, result.stderr
    assert [s["path"] for s in report["skipped"]] == [str(photos / "broken.jpg")]
    assert f"skipped {photos / 'broken.jpg'}" in result.stderr
    assert [row["image_path"] for row in shard_rows(tmp_path / "shards")] == [
        str(photos / path.name) for path in shared.paths[:3]
    ]


class Interrupt:
    """A progress reporter that stops the run once `after` images are embedded, as a kill
    would, but between two batches."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.embedded = 0
        self.phase_name = ""

    def phase(self, description: str, total: int) -> None:
        self.phase_name = description

    def advance(self, count: int) -> None:
        if self.phase_name == "Embedding":
            self.embedded += count
            if self.embedded >= self.after:
                raise KeyboardInterrupt


def test_an_interrupted_embed_resumes_without_embedding_its_finished_shards_again(
    cli, shared, tmp_path, decoded
):
    out = tmp_path / "shards"
    job = EmbedJob(shard_size=10, batch_size=4, model=TEST_MODEL, precision="fp32")
    with pytest.raises(KeyboardInterrupt):
        embed_folders([shared.photos], out, job, Interrupt(after=12))
    stopped = read_manifest(out)
    assert ([s.rows for s in stopped.shards], stopped.complete) == ([10], False)
    assert list(out.rglob("*.part")) == []
    first_shard = [row["image_path"] for row in shard_rows(out)]
    decoded.clear()

    report = embed(cli, shared.photos, out, *SHAPES_FP32, "--shard-size", "10")

    assert (report["kept"], report["embedded"], report["shards"]) == (10, 15, 3)
    assert sorted(decoded) == sorted(str(p) for p in shared.paths if str(p) not in first_shard)
    rows = shard_rows(out)
    assert [row["image_path"] for row in rows] == [str(p) for p in shared.paths]
    assert read_manifest(out).complete
    expected = np.stack([r.vector for r in catalog_rows(shared.index)]).astype(np.float16)
    assert np.array_equal(shard_vectors(out), expected)


def test_a_finished_set_embeds_only_new_and_changed_files_again(cli, shared, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in shared.paths[:4]:
        (photos / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "shards"
    embed(cli, photos, out, *SHAPES_FP32, "--shard-size", "10")
    (photos / "new.png").write_bytes(shared.paths[5].read_bytes())
    changed = photos / shared.paths[0].name
    changed.write_bytes(shared.paths[6].read_bytes())

    report = embed(cli, photos, out, *SHAPES_FP32, "--shard-size", "10")

    assert (report["kept"], report["embedded"], report["rows"]) == (3, 2, 6)
    rows = shard_rows(out)
    last = {row["image_path"]: row for row in rows}  # the last row of a path is the one read
    assert last[str(changed)]["sha256"] == file_sha256(changed)
    assert len(last) == 5


def test_a_re_run_without_model_carries_on_with_the_sets_own(cli, shared, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in shared.paths[:2]:
        (photos / path.name).write_bytes(path.read_bytes())
    embed(cli, photos, tmp_path / "shards", *SHAPES_FP32)
    (photos / "new.png").write_bytes(shared.paths[2].read_bytes())

    report = embed(cli, photos, tmp_path / "shards", "--precision", "fp32")

    assert (report["model"], report["kept"], report["embedded"]) == (TEST_MODEL, 2, 1)


def test_embed_refuses_to_carry_on_a_set_of_another_model(cli, shared, tmp_path, model_args):
    out = tmp_path / "shards"
    embed(cli, shared.photos, out, *SHAPES_FP32)
    before = snapshot(out)

    result = cli("embed", shared.photos, out, *model_args, "--precision", "fp32")

    assert result.exit_code == 2
    assert f"made with {TEST_MODEL}, not {TEST_MODEL} ({model_args[-1]})" in result.stderr
    assert snapshot(out) == before


def test_embed_refuses_an_out_that_is_something_else(cli, shared, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    afile = tmp_path / "a-file"
    afile.write_text("mine")

    for out in (other, afile):
        before = snapshot(tmp_path)
        result = cli("embed", shared.photos, out, *SHAPES_FP32)
        assert result.exit_code == 2
        assert f"{out}: exists and is not" in result.stderr
        assert snapshot(tmp_path) == before


def test_embedded_shards_import_into_an_index_that_index_finds_up_to_date(cli, shared, tmp_path):
    embed(cli, shared.photos, tmp_path / "shards", *SHAPES_FP32, "--shard-size", "10")
    result, imported = cli.json("import", tmp_path / "shards", "--index", tmp_path / "index")
    assert result.exit_code == 0, result.stderr

    result, report = cli.json("index", shared.photos, "--index", tmp_path / "index", *SHAPES_FP32)

    assert (imported["added"], report["added"], report["unchanged"]) == (25, 0, 25)


def test_a_model_that_cannot_load_leaves_no_out_behind(cli, shared, tmp_path):
    before = snapshot(tmp_path)

    result = cli(
        "embed",
        shared.photos,
        tmp_path / "shards",
        "--model",
        TEST_MODEL,
        "--pretrained",
        tmp_path / "missing.pt",
    )

    assert result.exit_code == 2
    assert snapshot(tmp_path) == before
