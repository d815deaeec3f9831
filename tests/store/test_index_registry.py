"""Which indexes clipcli knows of: those `clipcli index` completed in, and the default one."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

from conftest import TEST_MODEL, make_image, snapshot

from clipcli.models.names import ModelSpec
from clipcli.settings import known_indexes_file
from clipcli.store import index_registry
from clipcli.store.catalog import Catalog


def make_catalog(folder: Path, model: str = TEST_MODEL, pretrained: str | None = "p.pt") -> Path:
    """An index folder whose catalog records a model and holds no photo: enough to be known."""
    with Catalog(folder) as catalog:
        catalog.set_model(model, pretrained)
    return folder


def test_a_successful_index_run_registers_its_folder_by_absolute_path(
    cli, model_args, tmp_path: Path, monkeypatch
) -> None:
    make_image(tmp_path / "photos" / "red.png", "red")
    monkeypatch.chdir(tmp_path)
    result = cli("index", "photos", "--index", "relative-index", *model_args)
    assert result.exit_code == 0, result.stderr
    assert index_registry.known_indexes() == [tmp_path / "relative-index"]
    saved = json.loads(known_indexes_file().read_text())
    assert saved == {"indexes": [str(tmp_path / "relative-index")]}
    assert known_indexes_file().parent == Path(os.environ["CLIPCLI_HOME"]) / "data"


def test_a_failed_index_run_registers_nothing(cli, tmp_path: Path) -> None:
    result = cli("index", tmp_path / "no-such-folder", "--index", tmp_path / "index")
    assert result.exit_code == 2
    assert index_registry.known_indexes() == []
    assert not known_indexes_file().exists()


def test_registering_twice_keeps_one_entry_in_first_come_order(tmp_path: Path) -> None:
    first, second = make_catalog(tmp_path / "a"), make_catalog(tmp_path / "b")
    for folder in (first, second, first):
        index_registry.register(folder)
    assert index_registry.known_indexes() == [first, second]


def test_an_index_that_no_longer_exists_is_dropped_from_the_registry(tmp_path: Path) -> None:
    kept, gone = make_catalog(tmp_path / "kept"), make_catalog(tmp_path / "gone")
    index_registry.register(gone)
    index_registry.register(kept)
    shutil.rmtree(gone)
    assert index_registry.known_indexes() == [kept]
    assert json.loads(known_indexes_file().read_text()) == {"indexes": [str(kept)]}


def test_a_folder_without_a_catalog_is_not_an_index(tmp_path: Path) -> None:
    emptied = make_catalog(tmp_path / "emptied")
    index_registry.register(emptied)
    (emptied / "catalog.sqlite3").unlink()
    assert index_registry.known_indexes() == []


def test_the_default_index_is_known_without_being_registered(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPCLI_INDEX", str(tmp_path / "env-index"))
    assert index_registry.known_indexes() == []
    make_catalog(tmp_path / "env-index")
    assert index_registry.known_indexes() == [tmp_path / "env-index"]
    assert not known_indexes_file().exists()  # known, but nothing written for it


def test_a_folder_name_that_is_not_utf8_round_trips(tmp_path: Path) -> None:
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/latin1-\xe9"))
    make_catalog(folder)
    index_registry.register(folder)
    assert index_registry.known_indexes() == [folder]


def test_a_damaged_registry_is_read_as_empty_and_rewritten_on_the_next_run(tmp_path: Path) -> None:
    known_indexes_file().parent.mkdir(parents=True)
    known_indexes_file().write_text("{not json")
    assert index_registry.known_indexes() == []
    index_registry.register(make_catalog(tmp_path / "index"))
    assert index_registry.known_indexes() == [tmp_path / "index"]


def test_an_index_model_is_read_without_changing_its_folder(tmp_path: Path) -> None:
    folder = make_catalog(tmp_path / "index", "some-model", "/weights/w.pt")
    before = snapshot(folder)
    assert index_registry.indexed_model(folder) == ModelSpec("some-model", "/weights/w.pt")
    assert snapshot(folder) == before  # no -wal or -shm left behind


def test_an_index_model_is_read_while_a_writer_has_the_catalog_open(tmp_path: Path) -> None:
    folder = make_catalog(tmp_path / "index", "some-model", None)
    with Catalog(folder) as writer:  # WAL: -wal and -shm exist while it is open
        writer.set_model("other-model", "tag")
        assert index_registry.indexed_model(folder) == ModelSpec("other-model", "tag")


def test_an_index_without_a_model_or_readable_catalog_has_no_model(tmp_path: Path) -> None:
    blank = tmp_path / "blank"
    with Catalog(blank):
        pass
    assert index_registry.indexed_model(blank) is None
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "catalog.sqlite3").write_bytes(b"not sqlite at all" * 100)
    assert index_registry.indexed_model(damaged) is None
    assert index_registry.indexed_model(tmp_path / "missing") is None
    assert not (tmp_path / "missing").exists()


def test_the_model_is_read_from_the_catalog_meta_table(tmp_path: Path) -> None:
    folder = make_catalog(tmp_path / "index", "m", "p")
    db = sqlite3.connect(folder / "catalog.sqlite3")
    with db:
        db.execute("UPDATE meta SET value = 'n' WHERE key = 'model'")
        db.execute("UPDATE meta SET value = '' WHERE key = 'pretrained'")
    db.close()
    assert index_registry.indexed_model(folder) == ModelSpec("n", None)
