"""Weights known by their content: a checkpoint that moves, is copied or touched is the same
model, and an index finds its weights again, or is told where they went."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import TEST_MODEL, make_image, own_fingerprint, snapshot

from clipcli.encoders.export_cache import ExportFolder
from clipcli.models.names import BUNDLED_WEIGHTS, ModelSpec
from clipcli.models.weight_files import content_id
from clipcli.store.catalog import CATALOG_FILE


@pytest.fixture
def weights(random_checkpoint: Path, tmp_path: Path) -> Path:
    """A checkpoint of weights of its own, in a folder the test may move it out of."""
    spec = own_fingerprint(random_checkpoint, tmp_path)
    return Path(spec.pretrained or "")


@pytest.fixture
def indexed(cli, weights: Path, photo_folder: Path, tmp_path: Path) -> Path:
    index = tmp_path / "index"
    result = cli(
        "index", photo_folder, "--index", index, "--model", TEST_MODEL, "--pretrained", weights
    )
    assert result.exit_code == 0, result.stderr
    return index


def recorded(index: Path) -> dict[str, str]:
    with sqlite3.connect(index / CATALOG_FILE) as db:
        return dict(
            db.execute("SELECT key, value FROM meta WHERE key IN ('pretrained', 'weights')")
        )


def test_the_catalog_records_the_weights_by_content(indexed, weights):
    assert recorded(indexed) == {"pretrained": str(weights), "weights": content_id(str(weights))}
    assert content_id(str(weights)).startswith("sha256:")


def test_a_copied_or_touched_checkpoint_keeps_its_export(weights, tmp_path):
    copy = tmp_path / "elsewhere" / "same.pt"
    copy.parent.mkdir()
    shutil.copy(weights, copy)
    os.utime(copy, ns=(10**18, 10**18))
    original, moved = ModelSpec(TEST_MODEL, str(weights)), ModelSpec(TEST_MODEL, str(copy))
    assert ExportFolder.for_spec(moved).path == ExportFolder.for_spec(original).path


def test_an_index_whose_checkpoint_moved_searches_and_indexes_from_its_export(
    cli, indexed, weights, photo_folder, tmp_path
):
    weights.rename(tmp_path / "moved.pt")
    result, hits = cli.json("search", "a red square", "--index", indexed)
    assert result.exit_code == 0, result.stderr
    assert len(hits) == 5
    make_image(photo_folder / "new.png", "purple")
    result, report = cli.json("index", photo_folder, "--index", indexed)
    assert result.exit_code == 0, result.stderr  # the exported towers are those weights
    assert report["added"] == 1


def test_with_neither_its_checkpoint_nor_its_export_an_index_says_where_to_point(
    cli, indexed, weights, photo_folder, tmp_path, monkeypatch
):
    weights.rename(tmp_path / "moved.pt")
    monkeypatch.setenv("CLIPCLI_CACHE", str(tmp_path / "empty-cache"))
    make_image(photo_folder / "new.png", "purple")
    before = snapshot(indexed)

    result = cli("index", photo_folder, "--index", indexed)

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {weights}: weights file not found; if it moved, pass --pretrained NEWPATH\n"
    )
    assert snapshot(indexed) == before


def test_the_same_weights_at_a_new_place_carry_on_the_index(
    cli, indexed, weights, photo_folder, tmp_path
):
    moved = tmp_path / "moved.pt"
    weights.rename(moved)
    make_image(photo_folder / "new.png", "purple")
    args = ["--model", TEST_MODEL, "--pretrained", moved]
    result, report = cli.json("index", photo_folder, "--index", indexed, *args)
    assert result.exit_code == 0, result.stderr  # not "built with another model"
    assert report["added"] == 1
    assert recorded(indexed)["pretrained"] == str(moved)  # the catalog knows the new place


def test_search_takes_the_new_place_of_moved_weights_and_checks_them(
    cli, indexed, weights, random_checkpoint, tmp_path, monkeypatch
):
    moved = tmp_path / "moved.pt"
    weights.rename(moved)
    monkeypatch.setenv("CLIPCLI_CACHE", str(tmp_path / "empty-cache"))  # the model must load

    result, hits = cli.json("search", "a red square", "--index", indexed, "--pretrained", moved)
    assert result.exit_code == 0, result.stderr
    assert len(hits) == 5
    assert recorded(indexed)["pretrained"] == str(weights)  # a search records nothing

    other = cli("search", "a red square", "--index", indexed, "--pretrained", random_checkpoint)
    assert other.exit_code == 2
    assert other.stderr.startswith(
        f"error: {random_checkpoint}: holds other weights than this index was built with"
    )


def test_a_checkpoint_changed_in_place_is_not_taken_for_the_index_weights(
    cli, indexed, weights, random_checkpoint, tmp_path, monkeypatch
):
    shutil.copy(random_checkpoint, weights)  # other weights under the same name
    monkeypatch.setenv("CLIPCLI_CACHE", str(tmp_path / "empty-cache"))
    result = cli("search", "a red square", "--index", indexed)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: {weights}: the file changed since this index was built with it"
    )


def test_the_bundled_model_of_another_installation_is_found_in_this_one(
    cli, tmp_path, photo_folder
):
    index = tmp_path / "index"
    assert cli("index", photo_folder, "--index", index, "--model", TEST_MODEL).exit_code == 0
    old_place = "/old/site-packages/clipcli/weights/clipcli-shapes.pt"
    with sqlite3.connect(index / CATALOG_FILE) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'pretrained'", (old_place,))
    assert recorded(index)["weights"] == content_id(str(BUNDLED_WEIGHTS[TEST_MODEL]))

    result, hits = cli.json("search", "a red square", "--index", index)
    assert result.exit_code == 0, result.stderr
    assert len(hits) == 5
    make_image(photo_folder / "new.png", "purple")
    result, report = cli.json("index", photo_folder, "--index", index, "--model", TEST_MODEL)
    assert result.exit_code == 0, result.stderr  # the same model, not "built with another"
    assert report["added"] == 1
    assert recorded(index)["pretrained"] == str(BUNDLED_WEIGHTS[TEST_MODEL])


def test_cleaning_the_cache_keeps_the_export_of_an_index_whose_checkpoint_moved(
    cli, weights, photo_folder, tmp_path, monkeypatch
):
    monkeypatch.setenv("CLIPCLI_CACHE", str(tmp_path / "own-cache"))
    index = tmp_path / "index"
    args = ["--model", TEST_MODEL, "--pretrained", weights]
    assert cli("index", photo_folder, "--index", index, *args).exit_code == 0
    export = ExportFolder.for_spec(ModelSpec(TEST_MODEL, str(weights))).path
    weights.rename(tmp_path / "moved.pt")

    result, cleaned = cli.json("cache", "clean")

    assert result.exit_code == 0, result.stderr
    assert str(export) not in [removed["path"] for removed in cleaned["removed"]]
    assert export.is_dir()  # still the index's: its weights are known by content
    result, hits = cli.json("search", "a red square", "--index", index)
    assert (result.exit_code, len(hits)) == (0, 5)
