"""`clipcli export` and `clipcli import`: an index out to clip-retrieval's layout and back,
exactly; shards of clip-retrieval itself in; and the refusals, which change nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TEST_MODEL, make_image, make_non_utf8_image, snapshot
from shard_sets import (
    SHAPES_FP32,
    Library,
    catalog_rows,
    indexed_library,
    read_like_embedding_reader,
    write_clip_retrieval_shards,
)

from clipcli.media.hashing import file_sha256

QUERY = "a red star"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Library:
    return indexed_library(tmp_path_factory.mktemp("library"), shared_cache)


@pytest.fixture
def library(shared: Library) -> list[Path]:
    """25 photos, sorted: drawn shapes and one with an EXIF date (not to be changed)."""
    return shared.paths


@pytest.fixture
def indexed(shared: Library) -> Path:
    """The library indexed with the shapes model, fp32 (not to be changed)."""
    return shared.index


def export(cli, index: Path, out: Path, *args: str) -> dict:
    result, report = cli.json("export", out, "--index", index, *args)
    assert result.exit_code == 0, result.stderr
    return report


def import_(cli, shards: Path, index: Path, *args: str) -> dict:
    result, report = cli.json("import", shards, "--index", index, *args)
    assert result.exit_code == 0, result.stderr
    return report


def test_export_writes_the_layout_with_the_catalogs_values_in_id_order(cli, indexed, tmp_path):
    out = tmp_path / "shards"

    report = export(cli, indexed, out, "--shard-size", "10")

    assert report == {"out": str(out), "shards": 3, "rows": 25, "dim": 64, "model": TEST_MODEL}
    stored = catalog_rows(indexed)
    npys = [np.load(out / "img_emb" / f"img_emb_{n}.npy") for n in range(3)]
    assert [(a.dtype, a.shape) for a in npys] == [(np.float16, (10, 64))] * 2 + [
        (np.float16, (5, 64))
    ]
    expected = np.stack([row.vector for row in stored]).astype(np.float16)
    assert np.array_equal(np.concatenate(npys), expected)
    tables = [pq.read_table(out / "metadata" / f"metadata_{n}.parquet") for n in range(3)]
    assert tables[0].column_names == ["image_path", "sha256", "size", "mtime_ns", "taken_at"]
    assert [row for table in tables for row in table.to_pylist()] == [
        {
            "image_path": row.path,
            "sha256": row.sha256,
            "size": row.size,
            "mtime_ns": row.mtime_ns,
            "taken_at": row.taken_at,
        }
        for row in stored
    ]
    assert sorted(p.name for p in out.iterdir()) == ["clipcli-shards.json", "img_emb", "metadata"]


def test_exported_shards_read_as_embedding_reader_reads_them(cli, indexed, tmp_path):
    export(cli, indexed, tmp_path / "shards", "--shard-size", "10")

    vectors, paths = read_like_embedding_reader(tmp_path / "shards")

    stored = catalog_rows(indexed)
    assert paths == [row.path for row in stored]
    assert np.array_equal(vectors, np.stack([r.vector for r in stored]).astype(np.float16))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)


def test_export_import_round_trips_every_path_stat_hash_date_and_vector(cli, indexed, tmp_path):
    export(cli, indexed, tmp_path / "shards", "--shard-size", "10")

    report = import_(cli, tmp_path / "shards", tmp_path / "imported")

    assert (report["added"], report["skipped"], report["total"]) == (25, [], 25)
    before, after = catalog_rows(indexed), catalog_rows(tmp_path / "imported")
    fields = [(r.path, r.sha256, r.size, r.mtime_ns, r.taken_at) for r in before]
    assert [(r.path, r.sha256, r.size, r.mtime_ns, r.taken_at) for r in after] == fields
    assert any(r.taken_at is not None for r in after)
    for old, new in zip(before, after, strict=True):
        assert np.array_equal(new.vector, old.vector.astype(np.float16).astype(np.float32))


def test_an_imported_index_exports_the_same_shards_again(cli, indexed, tmp_path):
    export(cli, indexed, tmp_path / "first", "--shard-size", "10")
    import_(cli, tmp_path / "first", tmp_path / "imported")

    export(cli, tmp_path / "imported", tmp_path / "second", "--shard-size", "10")

    for n in range(3):
        npy = Path("img_emb") / f"img_emb_{n}.npy"
        assert (tmp_path / "second" / npy).read_bytes() == (tmp_path / "first" / npy).read_bytes()
        parquet = Path("metadata") / f"metadata_{n}.parquet"
        first, second = (pq.read_table(tmp_path / name / parquet) for name in ("first", "second"))
        assert second.equals(first)


def test_search_on_the_imported_index_finds_what_the_original_finds(cli, indexed, tmp_path):
    export(cli, indexed, tmp_path / "shards")
    import_(cli, tmp_path / "shards", tmp_path / "imported")

    _, original = cli.json("search", QUERY, "--index", indexed, "--top-k", "5")
    _, imported = cli.json("search", QUERY, "--index", tmp_path / "imported", "--top-k", "5")

    assert [hit["path"] for hit in imported] == [hit["path"] for hit in original]
    assert "red-star" in Path(imported[0]["path"]).name


def test_import_with_the_on_disk_layout_finds_what_the_original_finds(cli, indexed, tmp_path):
    import json

    export(cli, indexed, tmp_path / "shards")
    import_(cli, tmp_path / "shards", tmp_path / "imported", "--layout", "ivfpq")

    stamp = json.loads((tmp_path / "imported" / "vectors.json").read_text())
    assert stamp["layout"] == "ivfpq" and list((tmp_path / "imported").glob("*.ivfdata"))
    _, original = cli.json("search", QUERY, "--index", indexed, "--top-k", "5")
    _, imported = cli.json("search", QUERY, "--index", tmp_path / "imported", "--top-k", "5")
    assert [hit["path"] for hit in imported] == [hit["path"] for hit in original]


def test_import_refuses_an_unknown_layout_before_it_writes(cli, indexed, tmp_path):
    export(cli, indexed, tmp_path / "shards")
    result = cli("import", tmp_path / "shards", "--index", tmp_path / "new", "--layout", "hnsw")
    assert result.exit_code == 2 and "unknown layout 'hnsw'" in result.stderr
    assert snapshot(tmp_path / "new") is None


def test_indexing_the_photos_again_after_an_import_embeds_nothing(cli, indexed, tmp_path, library):
    export(cli, indexed, tmp_path / "shards")
    import_(cli, tmp_path / "shards", tmp_path / "imported")

    result, report = cli.json(
        "index", library[0].parent, "--index", tmp_path / "imported", *SHAPES_FP32
    )

    assert result.exit_code == 0, result.stderr
    assert (report["added"], report["updated"], report["unchanged"]) == (0, 0, 25)
    _, roots = cli.json("roots", "--index", tmp_path / "imported")
    assert [root["path"] for root in roots] == [str(library[0].parent)]


def test_export_refuses_an_out_that_is_not_empty_or_not_a_folder(cli, indexed, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    afile = tmp_path / "a-file"
    afile.write_text("mine")

    for out in (full, afile):
        before = snapshot(tmp_path)
        result = cli("export", out, "--index", indexed)
        assert result.exit_code == 2
        assert f"{out}: exists and is not" in result.stderr
        assert snapshot(tmp_path) == before


def test_export_into_an_empty_folder_fills_it(cli, indexed, tmp_path):
    (tmp_path / "empty").mkdir()

    report = export(cli, indexed, tmp_path / "empty")

    assert (report["shards"], report["rows"]) == (1, 25)
    assert (tmp_path / "empty" / "img_emb" / "img_emb_0.npy").is_file()


def test_a_failed_export_leaves_no_out_behind(cli, indexed, tmp_path, monkeypatch):
    from clipcli.shards import writer

    def full_disk(self, rows, vectors):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer._OpenShard, "add", full_disk)
    before = snapshot(tmp_path)

    result = cli("export", tmp_path / "shards", "--index", indexed)

    assert result.exit_code == 1
    assert "no space left on device" in result.stderr
    assert snapshot(tmp_path) == before


def test_import_refuses_a_model_other_than_the_shards_own(cli, indexed, tmp_path, model_args):
    export(cli, indexed, tmp_path / "shards")
    before = snapshot(tmp_path)

    result = cli("import", tmp_path / "shards", "--index", tmp_path / "imported", *model_args)

    assert result.exit_code == 2
    assert f"made with {TEST_MODEL}, not {TEST_MODEL} ({model_args[-1]})" in result.stderr
    assert snapshot(tmp_path) == before


def test_import_takes_the_shards_own_model_named_again(cli, indexed, tmp_path):
    export(cli, indexed, tmp_path / "shards")

    report = import_(cli, tmp_path / "shards", tmp_path / "imported", "--model", TEST_MODEL)

    assert (report["model"], report["added"]) == (TEST_MODEL, 25)


def test_import_refuses_an_index_that_holds_photos(cli, indexed, tmp_path):
    export(cli, indexed, tmp_path / "shards")
    before = snapshot(indexed)

    result = cli("import", tmp_path / "shards", "--index", indexed)

    assert result.exit_code == 2
    assert f"{indexed}: the index already holds 25 photos" in result.stderr
    assert snapshot(indexed) == before


def test_a_failed_import_leaves_nothing_behind(cli, indexed, tmp_path, monkeypatch):
    from clipcli import import_shards
    from clipcli.store.catalog import Catalog

    export(cli, indexed, tmp_path / "shards")
    monkeypatch.setattr(import_shards, "WRITE_BATCH", 10)
    real_add, calls = Catalog.add, []

    def add_then_fail(self, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_add(self, images)

    monkeypatch.setattr(Catalog, "add", add_then_fail)
    before = snapshot(tmp_path)

    result = cli("import", tmp_path / "shards", "--index", tmp_path / "imported")

    assert result.exit_code == 1 and calls[0] >= 10
    assert snapshot(tmp_path) == before


def foreign_shards(indexed: Path, out: Path, paths: list[str] | None = None) -> list[str]:
    """The index's vectors written as clip-retrieval writes them, with only image_path."""
    stored = catalog_rows(indexed)
    paths = paths or [row.path for row in stored]
    vectors = np.stack([row.vector for row in stored])[: len(paths)]
    write_clip_retrieval_shards(out, paths, vectors, shard_size=10)
    return paths


def test_import_of_foreign_shards_needs_the_model_named(cli, indexed, tmp_path):
    foreign_shards(indexed, tmp_path / "foreign")

    result = cli("import", tmp_path / "foreign", "--index", tmp_path / "imported")

    assert result.exit_code == 2
    assert "do not say which model made them" in result.stderr and "--model" in result.stderr
    assert not (tmp_path / "imported").exists()


def test_import_of_foreign_shards_hashes_the_files_there_and_skips_those_gone(
    cli, indexed, tmp_path, library
):
    paths = [str(path) for path in library]
    paths[3] = str(tmp_path / "photos" / "gone.jpg")
    foreign_shards(indexed, tmp_path / "foreign", paths)

    report = import_(cli, tmp_path / "foreign", tmp_path / "imported", "--model", TEST_MODEL)

    assert (report["added"], report["hashed"], report["total"]) == (24, 24, 24)
    assert [s["path"] for s in report["skipped"]] == [paths[3]]
    assert "file not found" in report["skipped"][0]["reason"]
    imported = {row.path: row for row in catalog_rows(tmp_path / "imported")}
    for path in library[:3]:
        stat = path.stat()
        row = imported[str(path)]
        assert (row.sha256, row.size, row.mtime_ns) == (
            file_sha256(path),
            stat.st_size,
            stat.st_mtime_ns,
        )
    _, again = cli.json("index", library[0].parent, "--index", tmp_path / "imported", *SHAPES_FP32)
    assert (again["added"], again["unchanged"]) == (1, 24)  # only the row whose file was gone


def test_of_rows_that_name_one_photo_the_last_is_kept(cli, indexed, tmp_path, library):
    stored = catalog_rows(indexed)
    paths = [row.path for row in stored] + [stored[0].path]
    vectors = np.stack([row.vector for row in stored] + [stored[1].vector])
    write_clip_retrieval_shards(tmp_path / "foreign", paths, vectors, shard_size=10)

    result, report = cli.json(
        "import", tmp_path / "foreign", "--index", tmp_path / "imported", "--model", TEST_MODEL
    )

    assert result.exit_code == 0, result.stderr
    assert (report["added"], report["duplicates"]) == (25, 1)
    assert "the last row of each was kept" in result.stderr
    imported = {row.path: row.vector for row in catalog_rows(tmp_path / "imported")}
    assert np.array_equal(imported[stored[0].path], stored[1].vector.astype(np.float16))


def test_import_refuses_vectors_of_another_width_than_the_models(cli, tmp_path, library):
    vectors = np.eye(32, dtype=np.float32)[: len(library)]
    write_clip_retrieval_shards(tmp_path / "foreign", [str(p) for p in library], vectors, 10)

    result = cli("import", tmp_path / "foreign", "--index", tmp_path / "i", "--model", TEST_MODEL)

    assert result.exit_code == 2
    assert f"the vectors have 32 dimensions, but {TEST_MODEL} makes 64" in result.stderr
    assert not (tmp_path / "i").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["export", "OUT"],
        ["import", "OUT", "--model", TEST_MODEL],
        ["embed", "PHOTOS", "OUT", "--model", TEST_MODEL],
    ],
)
def test_without_pyarrow_the_shard_commands_say_how_to_install_it(
    cli, tmp_path, monkeypatch, command
):
    (tmp_path / "PHOTOS").mkdir()
    (tmp_path / "OUT").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)

    result = (
        cli(*command, "--index", tmp_path / "index") if command[0] != "embed" else cli(*command)
    )

    assert result.exit_code == 2
    assert "pip install 'clipcli[shards]'" in result.stderr
    assert os.listdir(tmp_path / "OUT") == [] and not (tmp_path / "index").exists()


def test_export_leaves_out_a_photo_whose_name_parquet_cannot_hold_and_says_so(cli, tmp_path):
    photos = tmp_path / "photos"
    make_image(photos / "plain.png", "red")
    odd = make_non_utf8_image(photos)
    index = tmp_path / "index"
    assert cli("index", photos, "--index", index, *SHAPES_FP32).exit_code == 0

    result = cli("export", tmp_path / "shards", "--index", index)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("1 photo in 1 shard (64-d, clipcli-shapes)")
    assert "is not UTF-8" in result.stderr and "skipped" in result.stderr
    table = pq.read_table(tmp_path / "shards" / "metadata" / "metadata_0.parquet")
    assert table.column("image_path").to_pylist() == [str(photos / "plain.png")]
    assert str(odd) not in table.column("image_path").to_pylist()


def test_import_refuses_a_set_an_interrupted_embed_left(cli, tmp_path):
    from clipcli.shards.layout import Manifest, ShardModel, ShardRow
    from clipcli.shards.writer import ShardWriter

    model = ShardModel(TEST_MODEL, None)
    (tmp_path / "shards").mkdir()
    with ShardWriter(tmp_path / "shards", Manifest(model, None, 1), 1) as writer:
        writer.add([ShardRow("/p/a.jpg", "0" * 64, 1, 1)], np.eye(1, 64, dtype=np.float32))

    result = cli("import", tmp_path / "shards", "--index", tmp_path / "index")

    assert result.exit_code == 2
    assert "left this set incomplete" in result.stderr
    assert not (tmp_path / "index").exists()
