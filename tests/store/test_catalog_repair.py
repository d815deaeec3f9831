"""Specification of `clipcli index --repair`: what a damaged catalog still holds is kept, what it
lost is named and embedded again, and the damaged file is kept, unchanged, next to the new one.

The catalog-level cases build catalogs directly (no model), with 512-d vectors: a row then fills
a page of its own, so noise over one page of the images table costs exactly one photo.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import as_of_the_schema_before_dates, snapshot

from clipcli.errors import ClipcliError
from clipcli.media.perceptual_hash import PictureHash
from clipcli.progress import NoProgress
from clipcli.store import catalog_repair
from clipcli.store.catalog import CATALOG_FILE, MIGRATIONS, SCHEMA_VERSION, Catalog
from clipcli.store.catalog_records import Hashed, NewImage, StoredImage
from clipcli.vectors import to_blob

PAGE = 4096
DIM = 512
PHOTOS = 40
QUERY = "a red square"


def vector(seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return values / np.linalg.norm(values)


def photo(number: int) -> str:
    return f"/photos/{number:02d}.png"


def filled(folder: Path, photos: int = PHOTOS) -> None:
    """A catalog with a model, `photos` photos and one file known not to decode."""
    with Catalog(folder) as catalog:
        catalog.set_model("some-model", "some-weights")
        catalog.add(
            [NewImage(photo(i), 100 + i, 1_000 + i, f"{i:064x}", vector(i)) for i in range(photos)]
        )
        catalog.set_unreadable([("/photos/bad.png", 0, 7, "empty file (0 bytes)")])


def raw(folder: Path) -> sqlite3.Connection:
    return sqlite3.connect(folder / CATALOG_FILE)


def page_of(folder: Path, table_or_index: str, *, leaf_holding: int | None = None) -> int:
    """The page number (from 1) of a table's or index's root, or of the leaf holding a photo's
    vector (found by its bytes, which no other page holds)."""
    if leaf_holding is not None:
        offset = (folder / CATALOG_FILE).read_bytes().index(to_blob(vector(leaf_holding)))
        return offset // PAGE + 1
    db = raw(folder)
    try:
        return db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table_or_index,)
        ).fetchone()[0]
    finally:
        db.close()


def damage(folder: Path, *pages: int, seed: int = 8) -> None:
    """Noise over whole pages of the catalog file, as a failing disk might leave."""
    noise = np.random.default_rng(seed).integers(0, 256, PAGE, dtype=np.uint8).tobytes()
    with open(folder / CATALOG_FILE, "r+b") as handle:
        for page in pages:
            handle.seek((page - 1) * PAGE)
            handle.write(noise)


def garbage_past_the_header(folder: Path) -> None:
    """Every page noise, except the 100-byte file header SQLite starts each file with."""
    size = (folder / CATALOG_FILE).stat().st_size
    noise = np.random.default_rng(1).integers(0, 256, size - 100, dtype=np.uint8).tobytes()
    with open(folder / CATALOG_FILE, "r+b") as handle:
        handle.seek(100)
        handle.write(noise)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def repaired(folder: Path) -> catalog_repair.RepairReport:
    report = catalog_repair.repair_if_damaged(folder, NoProgress())
    assert report is not None
    return report


def contents(folder: Path) -> tuple[dict[str, str], int, tuple[str, str | None] | None]:
    """(path -> sha256, number of unreadable files, model) of the catalog in `folder`."""
    with Catalog(folder, read_only=True) as catalog:
        entries = {path: entry.sha256 for path, entry in catalog.entries().items()}
        return entries, len(catalog.unreadable()), catalog.model()


# --- what is kept and what is lost ----------------------------------------------------------------


def test_one_damaged_page_of_photos_costs_only_the_photo_on_it(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    filled(folder)
    damage(folder, page_of(folder, "images", leaf_holding=17))
    before = digest(folder / CATALOG_FILE)
    with Catalog(folder, read_only=True) as catalog:
        old_id = catalog.catalog_id

    report = repaired(folder)

    assert (report.kept, report.lost, report.lost_paths) == (PHOTOS - 1, 1, [photo(17)])
    entries, unreadable, model = contents(folder)
    assert sorted(entries) == sorted(photo(i) for i in range(PHOTOS) if i != 17)
    assert entries[photo(3)] == f"{3:064x}"
    assert (unreadable, model) == (1, ("some-model", "some-weights"))
    kept = Path(report.damaged)
    assert kept.parent == folder and kept.name.startswith(f"{CATALOG_FILE}.damaged-")
    assert digest(kept) == before  # the damaged file, byte for byte, under its new name
    with Catalog(folder, read_only=True) as catalog:
        assert catalog.schema_version == SCHEMA_VERSION
        assert catalog.catalog_id not in ("", old_id)  # its FAISS file is never taken for this
        ids, vectors = catalog.vectors()
        np.testing.assert_array_equal(vectors[list(ids).index(4)], vector(3))  # ids kept
    assert sorted(p.name for p in folder.iterdir()) == sorted([CATALOG_FILE, kept.name])


def test_without_the_path_index_the_rows_that_could_not_be_read_are_counted(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "index"
    filled(folder)
    damage(
        folder,
        page_of(folder, "images", leaf_holding=5),
        page_of(folder, "images", leaf_holding=30),
        page_of(folder, "sqlite_autoindex_images_1"),
    )

    report = repaired(folder)

    assert (report.kept, report.lost, report.lost_paths) == (PHOTOS - 2, 2, [])
    assert photo(5) not in contents(folder)[0]


def test_a_damaged_root_of_the_images_table_loses_every_photo_but_names_them(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "index"
    filled(folder)
    damage(folder, page_of(folder, "images"))

    report = repaired(folder)

    assert (report.kept, report.lost) == (0, PHOTOS)
    assert report.lost_paths == [photo(i) for i in range(PHOTOS)]
    entries, unreadable, model = contents(folder)
    assert (entries, unreadable, model) == ({}, 1, ("some-model", "some-weights"))


def test_vectors_of_a_model_that_cannot_be_read_are_not_kept(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    filled(folder)
    damage(folder, page_of(folder, "meta"))

    report = repaired(folder)

    # Searched with another model, they would find nonsense: they are embedded again.
    assert (report.kept, report.lost) == (0, PHOTOS)
    assert len(report.lost_paths) == PHOTOS
    assert contents(folder) == ({}, 1, None)


def test_a_catalog_whose_every_page_is_garbage_keeps_nothing_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    filled(folder)
    garbage_past_the_header(folder)
    before = digest(folder / CATALOG_FILE)

    report = repaired(folder)

    assert (report.kept, report.lost, report.lost_paths) == (0, None, [])  # None: not countable
    assert digest(Path(report.damaged)) == before
    assert contents(folder) == ({}, 0, None)
    with Catalog(folder) as catalog:  # a sound catalog, at the current schema
        assert catalog.schema_version == SCHEMA_VERSION and catalog.catalog_id


def test_a_file_that_is_not_sqlite_at_all_is_set_aside_too(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    folder.mkdir()
    (folder / CATALOG_FILE).write_bytes(b"this is not a database, just some text" * 100)

    report = repaired(folder)

    assert (report.kept, report.lost) == (0, None)
    assert Path(report.damaged).read_bytes().startswith(b"this is not a database")


def test_whichever_page_is_damaged_the_repair_accounts_for_every_photo(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    filled(whole, photos=12)
    pages = (whole / CATALOG_FILE).stat().st_size // PAGE
    for page in range(2, pages + 1):  # page 1 is the schema: nothing is readable without it
        folder = tmp_path / f"page-{page}"
        folder.mkdir()
        (folder / CATALOG_FILE).write_bytes((whole / CATALOG_FILE).read_bytes())
        damage(folder, page)

        report = repaired(folder)

        assert report.lost is not None and report.kept + report.lost == 12, page
        assert report.lost <= 1 or page in (
            page_of(whole, "meta"),
            page_of(whole, "images"),
        ), page
        assert len(contents(folder)[0]) == report.kept


def test_a_lost_path_that_is_not_utf8_is_named_as_python_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    odd = "/photos/latin1-\udce9.jpg"  # the Latin-1 byte for "é", as os.listdir gives it
    with Catalog(folder) as catalog:
        catalog.set_model("some-model", None)
        catalog.add([NewImage(odd, 1, 2, f"{0:064x}", vector(0))])
        catalog.add([NewImage(photo(1), 1, 2, f"{1:064x}", vector(1))])
    damage(folder, page_of(folder, "images", leaf_holding=0))

    report = repaired(folder)

    assert (report.kept, report.lost_paths) == (1, [odd])


def test_rows_with_values_clipcli_never_writes_are_dropped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    filled(folder, photos=6)
    db = raw(folder)
    with db:
        db.execute("UPDATE images SET embedding = ? WHERE id = 1", (b"\x00" * 12,))  # too short
        db.execute("UPDATE images SET size = 'big' WHERE id = 2")
        db.execute("UPDATE images SET sha256 = 'not a hash' WHERE id = 3")
        noise = np.random.default_rng(0).integers(0, 256, DIM * 4, dtype=np.uint8).tobytes()
        db.execute("UPDATE images SET embedding = ? WHERE id = 4", (noise,))  # not unit length
    db.close()

    report = catalog_repair.repair(folder)

    assert (report.kept, report.lost) == (2, 4)
    assert report.lost_paths == [photo(i) for i in range(4)]
    assert sorted(contents(folder)[0]) == [photo(4), photo(5)]


def test_a_damaged_catalog_of_an_older_schema_is_repaired_to_the_current_one(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "index"
    folder.mkdir()
    db = raw(folder)
    with db:
        db.executescript(f"{MIGRATIONS[0]}; PRAGMA user_version = 1;")
        db.execute("INSERT INTO meta VALUES ('model', 'old-model'), ('pretrained', 'old')")
        db.executemany(
            "INSERT INTO images (path, size, mtime_ns, sha256, embedding, indexed_at)"
            " VALUES (?, 1, 2, ?, ?, 0)",
            [(photo(i), f"{i:064x}", to_blob(vector(i))) for i in range(8)],
        )
    db.close()
    damage(folder, page_of(folder, "images", leaf_holding=2))

    report = repaired(folder)

    assert (report.kept, report.lost, report.lost_paths) == (7, 1, [photo(2)])
    assert contents(folder) == (
        {photo(i): f"{i:064x}" for i in range(8) if i != 2},
        0,
        ("old-model", "old"),
    )
    with Catalog(folder, read_only=True) as catalog:
        assert catalog.schema_version == SCHEMA_VERSION


def dates(folder: Path) -> dict[str, float | None]:
    db = raw(folder)
    try:
        return dict(db.execute("SELECT path, taken_at FROM images"))
    finally:
        db.close()


def test_a_repair_keeps_when_each_photo_was_taken(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    filled(folder)
    with Catalog(folder) as catalog:
        catalog.date([(id_, 1_600_000_000.0 + id_) for id_ in catalog.ids().tolist()])
    db = raw(folder)
    with db:
        db.execute("UPDATE images SET taken_at = NULL WHERE id = 5")  # not read yet
        db.execute("UPDATE images SET taken_at = 'yesterday' WHERE id = 6")  # never written
    db.close()
    damage(folder, page_of(folder, "images", leaf_holding=17))

    report = repaired(folder)

    assert (report.kept, report.lost_paths) == (PHOTOS - 1, [photo(17)])
    expected = {photo(i): 1_600_000_001.0 + i for i in range(PHOTOS) if i != 17}
    expected[photo(4)] = expected[photo(5)] = None  # ids 5 and 6: the photos stay, undated
    assert dates(folder) == expected


def pictures(folder: Path) -> dict[str, tuple[int | None, bytes | None]]:
    db = raw(folder)
    try:
        rows = db.execute("SELECT path, phash, colours FROM images")
        return {path: (phash, colours) for path, phash, colours in rows}
    finally:
        db.close()


def test_a_repair_keeps_the_picture_hash_of_each_photo(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    filled(folder)
    with Catalog(folder) as catalog:
        catalog.set_picture_hashes(
            [
                Hashed(id_, PictureHash(id_ - 2**63, bytes([id_]) * 48))
                for id_ in catalog.ids().tolist()
            ]
        )
    db = raw(folder)
    with db:
        db.execute("UPDATE images SET phash = NULL, colours = NULL WHERE id = 5")  # not yet
        db.execute("UPDATE images SET colours = x'0102' WHERE id = 6")  # never written
    db.close()
    damage(folder, page_of(folder, "images", leaf_holding=17))

    report = repaired(folder)

    assert (report.kept, report.lost_paths) == (PHOTOS - 1, [photo(17)])
    expected = {photo(i): (i + 1 - 2**63, bytes([i + 1]) * 48) for i in range(PHOTOS) if i != 17}
    expected[photo(4)] = expected[photo(5)] = (None, None)  # ids 5 and 6: for the index run
    assert pictures(folder) == expected
    with Catalog(folder) as catalog:
        assert [entry.id for entry in catalog.unhashed()] == [5, 6]


def test_a_damaged_catalog_of_the_schema_before_dates_is_repaired_with_its_photos_undated(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "index"
    filled(folder, photos=8)
    as_of_the_schema_before_dates(folder)
    damage(folder, page_of(folder, "images", leaf_holding=2))

    report = repaired(folder)

    assert (report.kept, report.lost_paths) == (7, [photo(2)])
    assert dates(folder) == {photo(i): None for i in range(8) if i != 2}
    with Catalog(folder) as catalog:
        assert catalog.schema_version == SCHEMA_VERSION
        assert len(catalog.undated()) == 7  # for the index run to date


def test_what_a_wal_file_holds_is_kept_and_the_wal_goes_with_the_damaged_file(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "index"
    filled(folder, photos=10)
    writer = raw(folder)  # a run killed before its changes reached the main file
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    with writer:
        writer.execute("DELETE FROM images WHERE id = 10")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in (CATALOG_FILE, f"{CATALOG_FILE}-wal"):
        shutil.copy(folder / name, copy / name)
    writer.close()
    damage(copy, page_of(folder, "images", leaf_holding=4))
    wal = digest(copy / f"{CATALOG_FILE}-wal")

    report = repaired(copy)

    assert (report.kept, report.lost, report.lost_paths) == (8, 1, [photo(4)])  # 9 in the WAL
    assert digest(Path(f"{report.damaged}-wal")) == wal
    assert not (copy / f"{CATALOG_FILE}-wal").exists()
    assert photo(9) not in contents(copy)[0]


# --- nothing lost, whatever happens ---------------------------------------------------------------


def test_a_sound_catalog_is_not_repaired(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    filled(folder)
    before = snapshot(folder)

    assert catalog_repair.repair_if_damaged(folder, NoProgress()) is None
    assert catalog_repair.repair_if_damaged(tmp_path / "nowhere", NoProgress()) is None

    assert snapshot(folder) == before
    assert not (tmp_path / "nowhere").exists()


def fail(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    "where",
    [
        pytest.param((Catalog, "restore"), id="while-copying"),
        pytest.param((catalog_repair.os, "replace"), id="moving-the-new-catalog-in"),
        pytest.param((catalog_repair.os, "link"), id="keeping-the-damaged-file"),
    ],
)
def test_a_repair_that_fails_midway_leaves_the_damaged_catalog_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: tuple[object, str]
) -> None:
    folder = tmp_path / "index"
    filled(folder)
    damage(folder, page_of(folder, "images", leaf_holding=17))
    before = snapshot(folder)
    if where[1] == "link":  # and where the file system has no hard links, the rename fails
        monkeypatch.setattr(catalog_repair.os, "rename", fail)
    monkeypatch.setattr(*where, fail)

    with pytest.raises(OSError, match="No space"):
        catalog_repair.repair_if_damaged(folder, NoProgress())

    assert snapshot(folder) == before  # in place, unchanged, and nothing left beside it


def test_a_killed_repair_leaves_nothing_in_the_way_of_the_next(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    filled(folder)
    damage(folder, page_of(folder, "images", leaf_holding=1))
    left = folder / f"{catalog_repair.BUILD_PREFIX}killed"
    left.mkdir()
    (left / CATALOG_FILE).write_bytes(b"half a catalog")

    assert repaired(folder).kept == PHOTOS - 1
    assert not left.exists()


def test_a_catalog_of_a_newer_clipcli_is_not_repaired(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    filled(folder)
    db = raw(folder)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    damage(folder, page_of(folder, "images", leaf_holding=1))
    before = snapshot(folder)

    with pytest.raises(ClipcliError, match="newer than this clipcli understands"):
        catalog_repair.repair_if_damaged(folder, NoProgress())

    assert snapshot(folder) == before


def test_restore_keeps_ids_and_the_first_row_of_a_path(tmp_path: Path) -> None:
    blob = to_blob(vector(1))
    with Catalog(tmp_path / "index") as catalog:
        catalog.restore(
            [
                StoredImage(7, photo(1), 1, 2, "a" * 64, blob, 3.0),
                StoredImage(9, photo(1), 1, 2, "b" * 64, blob, 3.0),
            ]
        )
        assert {e.id: e.sha256 for e in catalog.entries().values()} == {7: "a" * 64}
        assert catalog.generation == 1


# --- the command ----------------------------------------------------------------------------------


@pytest.fixture
def indexed(cli, model_args: list[str], photo_folder: Path, tmp_path: Path) -> Path:
    index = tmp_path / "index"
    result = cli("index", photo_folder, "--index", index, *model_args)
    assert result.exit_code == 0, result.stderr
    return index


def every_photo(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


def search_all(cli, index: Path) -> list[str]:
    result, hits = cli.json("search", QUERY, "--index", index, "--top-k", "50")
    assert result.exit_code == 0, result.stderr
    return sorted(hit["path"] for hit in hits)


def damage_at(index: Path, offset: int) -> None:
    """Noise over the 4 KiB at `offset` of the catalog file."""
    assert (index / CATALOG_FILE).stat().st_size > offset + PAGE
    noise = np.random.default_rng(8).integers(0, 256, PAGE, dtype=np.uint8).tobytes()
    with open(index / CATALOG_FILE, "r+b") as handle:
        handle.seek(offset)
        handle.write(noise)


# The first pages of the small test catalog: 8 KiB is the meta table's key index, which the
# repair rebuilds from the table; 12 KiB is the one page of the images table.
@pytest.mark.parametrize(("offset", "kept"), [(8192, 5), (12288, 0)], ids=["at-8k", "at-12k"])
def test_repair_keeps_what_the_catalog_holds_and_embeds_what_it_lost_again(
    cli, model_args: list[str], photo_folder: Path, indexed: Path, offset: int, kept: int
) -> None:
    damage_at(indexed, offset)
    damaged = digest(indexed / CATALOG_FILE)
    assert cli("search", QUERY, "--index", indexed).exit_code == 1  # damaged, as it says

    result, report = cli.json("index", photo_folder, "--index", indexed, "--repair", *model_args)

    assert result.exit_code == 0, result.stderr
    repair = report["repaired"]
    assert set(repair) == {"damaged", "kept", "lost", "lost_paths"}
    assert (repair["kept"], repair["lost"]) == (kept, 5 - kept)
    assert repair["lost_paths"] == every_photo(photo_folder)[: 5 - kept]
    assert (report["added"], report["unchanged"], report["total"]) == (5 - kept, kept, 5)
    assert digest(Path(repair["damaged"])) == damaged
    assert Path(repair["damaged"]).parent == indexed
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(
        f"warning: repaired the damaged catalog: kept {kept} photos, lost {5 - kept}"
    )
    assert lines[0].endswith(f"; the damaged file is kept as {repair['damaged']}")
    assert search_all(cli, indexed) == every_photo(photo_folder)


def test_repair_of_a_catalog_of_garbage_embeds_every_photo_again(
    cli, model_args: list[str], photo_folder: Path, indexed: Path
) -> None:
    garbage_past_the_header(indexed)

    result = cli("index", photo_folder, "--index", indexed, "--repair", *model_args)

    assert result.exit_code == 0, result.stderr
    assert "5 added" in result.stdout
    assert result.stderr.startswith(
        "warning: repaired the damaged catalog: kept 0 photos, lost an uncounted number;"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert search_all(cli, indexed) == every_photo(photo_folder)


def test_repair_of_a_sound_catalog_is_a_plain_index_run(
    cli, model_args: list[str], photo_folder: Path, indexed: Path
) -> None:
    before = snapshot(indexed)

    result, report = cli.json("index", photo_folder, "--index", indexed, "--repair", *model_args)

    assert result.exit_code == 0, result.stderr
    assert "repaired" not in report
    assert (report["unchanged"], report["total"]) == (5, 5)
    assert result.stderr == ""
    assert snapshot(indexed) == before


def test_a_repair_that_fails_is_one_line_and_leaves_the_damaged_catalog_in_place(
    cli,
    model_args: list[str],
    photo_folder: Path,
    indexed: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    damage_at(indexed, 12288)
    before = snapshot(indexed)
    monkeypatch.setattr(catalog_repair.os, "replace", fail)

    result = cli("index", photo_folder, "--index", indexed, "--repair", *model_args)

    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: no space left on device"]
    assert snapshot(indexed) == before


def test_a_repair_is_reported_even_when_the_run_then_fails(
    cli, photo_folder: Path, indexed: Path
) -> None:
    damage_at(indexed, 8192)

    result = cli("index", photo_folder, "--index", indexed, "--repair", "--model", "clipcli-shapes")

    assert result.exit_code == 2  # the index was built with other weights
    warning, error = result.stderr.strip().splitlines()
    assert warning.startswith("warning: repaired the damaged catalog: kept 5 photos, lost 0;")
    assert error.startswith(f"error: {indexed}: index was built with")
    kept = next(indexed.glob(f"{CATALOG_FILE}.damaged-*"))
    assert warning.endswith(f"the damaged file is kept as {kept}")
    assert len(search_all(cli, indexed)) == 5  # the repair stays done
