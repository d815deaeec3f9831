"""Specification of the SQLite catalog: schema migrations, writes, the generation counter, blobs."""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import as_of_the_previous_schema, as_of_the_schema_before_dates

from clipcli.errors import ClipcliError
from clipcli.media.perceptual_hash import PictureHash
from clipcli.store.catalog import CATALOG_FILE, MIGRATIONS, SCHEMA_VERSION, Catalog
from clipcli.store.catalog_records import Hashed, NewImage
from clipcli.vectors import from_blob, to_blob

DIM = 8


def vector(seed: int) -> np.ndarray:
    """A deterministic unit vector; the catalog stores whatever dimension it is given."""
    values = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return values / np.linalg.norm(values)


def new_image(path: str, sha256: str, seed: int = 0, size: int = 100) -> NewImage:
    return NewImage(path, size, 1_000 + seed, sha256, vector(seed))


@contextmanager
def raw(folder: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection, to check what is on disk rather than what the class reports."""
    db = sqlite3.connect(folder / CATALOG_FILE)
    try:
        with db:  # commits what the block wrote
            yield db
    finally:
        db.close()


def user_version(folder: Path) -> int:
    with raw(folder) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def stored_rows(folder: Path) -> dict[str, tuple[int, int, int, str, bytes]]:
    """path -> (id, size, mtime_ns, sha256, embedding blob), straight from the images table."""
    with raw(folder) as db:
        rows = db.execute("SELECT path, id, size, mtime_ns, sha256, embedding FROM images")
        return {row[0]: tuple(row[1:]) for row in rows}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "index"


@pytest.fixture
def catalog(folder: Path):
    with Catalog(folder) as opened:
        yield opened


# --- schema and migrations ------------------------------------------------------------------------


def test_fresh_catalog_is_created_at_the_latest_schema_version(folder: Path) -> None:
    with Catalog(folder) as catalog:
        assert catalog.count() == 0
        assert catalog.model() is None
        assert catalog.generation == 0

    assert (folder / CATALOG_FILE).is_file()
    assert user_version(folder) == SCHEMA_VERSION == len(MIGRATIONS)
    with raw(folder) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "images", "unreadable"} <= tables


def test_reopening_keeps_contents_and_does_not_migrate_again(folder: Path) -> None:
    with Catalog(folder) as catalog:
        catalog.set_model("clipcli-shapes", "/weights/a.pt")
        catalog.add([new_image("/photos/a.png", "aaa")])

    with Catalog(folder) as again:
        assert again.count() == 1
        assert again.model() == ("clipcli-shapes", "/weights/a.pt")
    assert user_version(folder) == SCHEMA_VERSION


def test_catalog_at_an_older_version_is_upgraded_in_place_keeping_its_images(
    folder: Path,
) -> None:
    folder.mkdir()
    with raw(folder) as db:
        db.executescript(f"{MIGRATIONS[0]}; PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO images (path, size, mtime_ns, sha256, embedding, indexed_at)"
            " VALUES ('/photos/old.png', 10, 20, 'old', ?, 0)",
            (to_blob(vector(1)),),
        )

    with Catalog(folder) as catalog:
        assert list(catalog.entries()) == ["/photos/old.png"]
        catalog.set_unreadable([("/photos/bad.png", 0, 5, "empty file (0 bytes)")])
        assert catalog.unreadable() == {"/photos/bad.png": (0, 5, "empty file (0 bytes)")}
    assert user_version(folder) == SCHEMA_VERSION


def older_catalog(folder: Path) -> bytes:
    """A catalog at schema 1 holding one image; returns its bytes."""
    folder.mkdir()
    with raw(folder) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(f"{MIGRATIONS[0]}; PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO images (path, size, mtime_ns, sha256, embedding, indexed_at)"
            " VALUES ('/photos/old.png', 10, 20, 'old', ?, 0)",
            (to_blob(vector(1)),),
        )
    return (folder / CATALOG_FILE).read_bytes()


def test_an_older_catalog_opened_and_only_read_is_left_at_its_version(folder: Path) -> None:
    before = older_catalog(folder)

    with Catalog(folder) as catalog:
        assert list(catalog.entries()) == ["/photos/old.png"]  # read at the new schema
        assert catalog.unreadable() == {}
        assert catalog.catalog_id

    assert (folder / CATALOG_FILE).read_bytes() == before  # readable by its own clipcli still
    assert user_version(folder) == 1


def test_an_older_catalog_is_left_as_it_was_when_the_first_write_fails(folder: Path) -> None:
    before = older_catalog(folder)

    broken = NewImage(None, 1, 1, "ccc", vector(3))  # type: ignore[arg-type]  # path NOT NULL
    with Catalog(folder) as catalog, pytest.raises(sqlite3.IntegrityError):
        catalog.add([new_image("/photos/a.png", "aaa"), broken])

    assert (folder / CATALOG_FILE).read_bytes() == before


def previous_schema_catalog(folder: Path) -> bytes:
    """A catalog of the schema before dates, holding two photos; returns its bytes."""
    with Catalog(folder) as catalog:
        catalog.add([new_image("/photos/a.png", "aaa", 1), new_image("/photos/b.png", "bbb", 2)])
    as_of_the_schema_before_dates(folder)
    return (folder / CATALOG_FILE).read_bytes()


def test_a_catalog_of_the_schema_before_dates_is_upgraded_with_its_photos_undated(
    folder: Path,
) -> None:
    previous_schema_catalog(folder)
    before = stored_rows(folder)

    with Catalog(folder) as catalog:
        undated = catalog.undated()
        assert sorted(entry.path for entry in undated) == ["/photos/a.png", "/photos/b.png"]
        assert {entry.mtime_ns for entry in undated} == {1_001, 1_002}
        catalog.date([(undated[0].id, 1_600_000_000.0)])
        assert [entry.id for entry in catalog.undated()] == [undated[1].id]

    assert user_version(folder) == SCHEMA_VERSION
    assert stored_rows(folder) == before  # paths, stats, hashes and vectors as they were
    with raw(folder) as db:
        dates = dict(db.execute("SELECT id, taken_at FROM images"))
    assert dates == {undated[0].id: 1_600_000_000.0, undated[1].id: None}


def test_a_catalog_of_the_schema_before_dates_only_read_is_left_as_it_was(folder: Path) -> None:
    before = previous_schema_catalog(folder)

    with Catalog(folder) as catalog:
        assert len(catalog.undated()) == 2
        assert len(catalog.filtered_ids(since=0.0)) == 2

    assert (folder / CATALOG_FILE).read_bytes() == before
    assert user_version(folder) == SCHEMA_VERSION - 2


def test_catalog_from_a_newer_clipcli_is_refused_without_migrating_it(folder: Path) -> None:
    folder.mkdir()
    with raw(folder) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(ClipcliError) as caught:
        Catalog(folder)

    assert "newer" in caught.value.message
    assert caught.value.hint is not None and "upgrade" in caught.value.hint
    assert user_version(folder) == SCHEMA_VERSION + 1
    with raw(folder) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_file_that_is_not_sqlite_is_reported_as_an_unreadable_catalog(folder: Path) -> None:
    folder.mkdir()
    (folder / CATALOG_FILE).write_bytes(b"this is not a database, just some text" * 100)

    with pytest.raises(ClipcliError) as caught:
        Catalog(folder)

    assert "not a readable clipcli catalog" in caught.value.message


def test_a_catalog_opened_read_only_is_never_created_migrated_or_written(folder: Path) -> None:
    with pytest.raises(ClipcliError):
        Catalog(folder, read_only=True)
    assert not folder.exists()

    folder.mkdir()
    with raw(folder) as db:
        db.executescript(f"{MIGRATIONS[0]}; PRAGMA user_version = 1;")
    before = (folder / CATALOG_FILE).read_bytes()
    with Catalog(folder, read_only=True) as catalog:
        assert (catalog.schema_version, catalog.count(), catalog.model()) == (1, 0, None)
        with pytest.raises(ClipcliError) as caught:
            catalog.set_model("clipcli-shapes", None)
    assert "readonly" in caught.value.message
    assert (folder / CATALOG_FILE).read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == [CATALOG_FILE]


PAGE = 4096  # SQLite's default page size, which the catalog keeps


def damage_page(folder: Path, number: int) -> None:
    """Overwrite one page of the catalog file with noise, as a failing disk might."""
    noise = np.random.default_rng(number).integers(0, 256, PAGE, dtype=np.uint8).tobytes()
    with open(folder / CATALOG_FILE, "r+b") as handle:
        handle.seek(number * PAGE)
        handle.write(noise)


def filled_catalog(folder: Path) -> int:
    """A catalog with a model, 40 images and an unreadable file; returns its number of pages."""
    with Catalog(folder) as catalog:
        catalog.set_model("some-model", "some-weights")
        catalog.add([new_image(f"/photos/{i:02d}.png", f"{i:064x}", seed=i) for i in range(40)])
        catalog.set_unreadable([("/photos/bad.png", 0, 0, "empty file (0 bytes)")])
    return (folder / CATALOG_FILE).stat().st_size // PAGE


def test_a_catalog_damaged_at_8_kib_is_named_with_a_way_out(folder: Path) -> None:
    filled_catalog(folder)
    damage_page(folder, 2)  # the bytes from 8 KiB on

    with pytest.raises(ClipcliError) as caught, Catalog(folder) as catalog:
        catalog.model()

    assert caught.value.message.startswith(f"{folder / CATALOG_FILE}: ")
    assert "damaged" in caught.value.message
    assert "clipcli index FOLDER --repair" in (caught.value.hint or "")
    assert caught.value.exit_code == 1


def every_use(catalog: Catalog) -> None:
    """Each read and write the commands make of a catalog."""
    catalog.model()
    catalog.generation  # noqa: B018  # a read of the meta table
    catalog.catalog_id  # noqa: B018
    catalog.count()
    catalog.entries()
    catalog.unreadable()
    catalog.embedding_for_hash(f"{3:064x}")
    catalog.vectors()
    catalog.vectors(changed_after=0)
    catalog.ids()
    catalog.paths_for([1, 2, 3])
    catalog.filtered_ids(under=["/photos"], since=0.0, extensions=["png"])
    catalog.undated()
    catalog.add([new_image("/photos/new.png", "new", seed=99)])
    catalog.date([(1, 5.0)])
    catalog.touch([(1, 5, 5)])
    catalog.move([(2, "/photos/moved.png", 5, 5)])
    catalog.set_unreadable([("/photos/worse.png", 0, 0, "empty file (0 bytes)")])
    catalog.forget_unreadable(set())
    catalog.remove([3])
    catalog.set_model("other-model", None)
    catalog.clear()


def damaged_copies(tmp_path: Path, pages: int) -> Iterator[tuple[int, Path]]:
    """Copies of the catalog in tmp_path/whole, each with one of its pages overwritten."""
    for number in range(pages):
        folder = tmp_path / f"page-{number}"
        folder.mkdir()
        (folder / CATALOG_FILE).write_bytes((tmp_path / "whole" / CATALOG_FILE).read_bytes())
        damage_page(folder, number)
        yield number, folder


def test_whichever_page_is_damaged_the_catalog_raises_only_its_own_errors(
    tmp_path: Path,
) -> None:
    pages = filled_catalog(tmp_path / "whole")
    assert pages > 3
    failed = []
    for number, folder in damaged_copies(tmp_path, pages):
        try:
            with Catalog(folder) as catalog:
                every_use(catalog)
        except ClipcliError as exc:  # a sqlite3 error would fail the test here
            assert exc.message.startswith(f"{folder / CATALOG_FILE}: ")
            failed.append(number)
    assert failed == list(range(pages))  # noise in any page is found


def test_reading_vectors_block_by_block_from_a_damaged_catalog_raises_only_its_own_errors(
    tmp_path: Path,
) -> None:
    failed = 0
    for _, folder in damaged_copies(tmp_path, filled_catalog(tmp_path / "whole")):
        try:
            with Catalog(folder) as catalog:
                for _ in catalog.vector_blocks(7):  # the error comes as the blocks are read
                    pass
        except ClipcliError as exc:  # a sqlite3 error would fail the test here
            assert exc.message.startswith(f"{folder / CATALOG_FILE}: ")
            failed += 1
    assert failed  # noise in a vector's bytes reads back as other numbers; in a page's header not


# --- model metadata -------------------------------------------------------------------------------


def test_model_and_pretrained_are_stored_in_meta(folder: Path) -> None:
    with Catalog(folder) as catalog:
        catalog.set_model("clipcli-shapes", "/weights/a.pt")
    with raw(folder) as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    assert meta["model"] == "clipcli-shapes"
    assert meta["pretrained"] == "/weights/a.pt"


def test_model_without_pretrained_weights_reads_back_as_none(catalog: Catalog) -> None:
    catalog.set_model("hf-hub:org/repo", None)
    assert catalog.model() == ("hf-hub:org/repo", None)


# --- embeddings as blobs --------------------------------------------------------------------------


def test_embedding_is_stored_as_little_endian_float32_blob(folder: Path, catalog: Catalog) -> None:
    catalog.add([new_image("/photos/a.png", "aaa", seed=3)])

    blob = stored_rows(folder)["/photos/a.png"][4]

    assert len(blob) == DIM * 4
    assert blob == struct.pack(f"<{DIM}f", *vector(3))
    np.testing.assert_array_equal(from_blob(blob), vector(3))


def test_to_blob_writes_little_endian_float32_whatever_the_input_dtype() -> None:
    values = [1.5, -2.25, 0.0]
    expected = struct.pack("<3f", *values)
    assert to_blob(np.array(values, dtype=">f4")) == expected
    assert to_blob(np.array(values, dtype=np.float64)) == expected
    assert from_blob(expected).dtype == np.float32


# --- writes ---------------------------------------------------------------------------------------


def test_add_records_path_stats_hash_and_vector(catalog: Catalog) -> None:
    catalog.add([new_image("/photos/a.png", "aaa", seed=1), new_image("/photos/b.png", "bbb", 2)])

    entries = catalog.entries()
    assert catalog.count() == 2
    assert set(entries) == {"/photos/a.png", "/photos/b.png"}
    a = entries["/photos/a.png"]
    assert (a.path, a.size, a.mtime_ns, a.sha256) == ("/photos/a.png", 100, 1_001, "aaa")
    np.testing.assert_array_equal(catalog.embedding_for_hash("bbb"), vector(2))
    assert catalog.embedding_for_hash("unknown") is None


def test_adding_a_known_path_again_replaces_it_in_place(folder: Path, catalog: Catalog) -> None:
    catalog.add([new_image("/photos/a.png", "old", seed=1)])
    first_id = catalog.entries()["/photos/a.png"].id

    catalog.add([new_image("/photos/a.png", "new", seed=2, size=200)])

    entry = catalog.entries()["/photos/a.png"]
    assert catalog.count() == 1
    assert (entry.id, entry.sha256, entry.size) == (first_id, "new", 200)
    assert stored_rows(folder)["/photos/a.png"][4] == to_blob(vector(2))


def test_a_failing_add_commits_nothing(catalog: Catalog) -> None:
    catalog.add([new_image("/photos/a.png", "aaa")])
    generation = catalog.generation
    broken = NewImage(None, 1, 1, "ccc", vector(3))  # type: ignore[arg-type]  # path NOT NULL

    with pytest.raises(sqlite3.IntegrityError):
        catalog.add([new_image("/photos/b.png", "bbb"), broken])

    assert set(catalog.entries()) == {"/photos/a.png"}
    assert catalog.generation == generation


def test_move_gives_a_new_path_and_stats_keeping_id_and_vector(
    folder: Path, catalog: Catalog
) -> None:
    catalog.add([new_image("/photos/a.png", "aaa", seed=1)])
    before = stored_rows(folder)["/photos/a.png"]

    catalog.move([(before[0], "/photos/2020/renamed.png", 123, 456)])

    rows = stored_rows(folder)
    assert list(rows) == ["/photos/2020/renamed.png"]
    assert rows["/photos/2020/renamed.png"] == (before[0], 123, 456, "aaa", before[4])


def test_touch_records_new_stats_without_changing_hash_or_vector(
    folder: Path, catalog: Catalog
) -> None:
    catalog.add([new_image("/photos/a.png", "aaa", seed=1)])
    id_, _, _, sha, blob = stored_rows(folder)["/photos/a.png"]

    catalog.touch([(id_, 100, 999_999)])

    assert stored_rows(folder)["/photos/a.png"] == (id_, 100, 999_999, sha, blob)


def taken(folder: Path) -> dict[str, float | None]:
    with raw(folder) as db:
        return dict(db.execute("SELECT path, taken_at FROM images"))


def test_when_a_photo_was_taken_is_stored_and_kept_through_moves_and_touches(
    folder: Path, catalog: Catalog
) -> None:
    catalog.add(
        [
            NewImage("/photos/a.png", 1, 1, "aaa", vector(1), 1_600_000_000.5),
            NewImage("/photos/b.png", 1, 1, "bbb", vector(2)),  # to be read by the index run
        ]
    )
    ids = {path: entry.id for path, entry in catalog.entries().items()}
    assert taken(folder) == {"/photos/a.png": 1_600_000_000.5, "/photos/b.png": None}

    catalog.move([(ids["/photos/a.png"], "/photos/moved/a.png", 1, 7)])
    catalog.touch([(ids["/photos/a.png"], 2, 9)])

    assert taken(folder) == {"/photos/moved/a.png": 1_600_000_000.5, "/photos/b.png": None}
    catalog.add([NewImage("/photos/b.png", 1, 2, "ccc", vector(3), 1_700_000_000.0)])
    assert taken(folder)["/photos/b.png"] == 1_700_000_000.0  # new content, its own date
    assert [entry.path for entry in catalog.undated()] == []


def test_the_vector_size_is_that_of_the_stored_vectors(catalog: Catalog) -> None:
    assert catalog.vector_size() == 0  # none stored yet
    catalog.add([new_image("/photos/a.png", "aaa")])
    assert catalog.vector_size() == len(vector(1))


def test_dates_are_read_by_id_none_where_unknown(folder: Path, catalog: Catalog) -> None:
    catalog.add(
        [
            NewImage("/photos/a.png", 1, 1, "aaa", vector(1), 1_600_000_000.5),
            NewImage("/photos/b.png", 1, 1, "bbb", vector(2)),
        ]
    )
    ids = {path: entry.id for path, entry in catalog.entries().items()}
    asked = [ids["/photos/b.png"], ids["/photos/a.png"], 999]
    assert catalog.dates_for(asked) == {
        ids["/photos/a.png"]: 1_600_000_000.5,
        ids["/photos/b.png"]: None,
        999: None,  # no such photo
    }


def test_a_catalog_from_before_dates_reads_as_undated_and_is_left_as_it_was(folder: Path) -> None:
    before = previous_schema_catalog(folder)
    with Catalog(folder, read_only=True) as catalog:
        assert set(catalog.dates_for(catalog.ids().tolist()).values()) == {None}
    assert (folder / CATALOG_FILE).read_bytes() == before


def test_recording_dates_is_not_a_new_generation(catalog: Catalog) -> None:
    catalog.add([new_image("/photos/a.png", "aaa")])
    generation = catalog.generation

    catalog.date([(catalog.entries()["/photos/a.png"].id, 1_600_000_000.0)])
    catalog.date([])

    assert catalog.generation == generation  # the FAISS index holds no dates: it stays valid
    assert catalog.undated() == []


def picture_columns(folder: Path) -> dict[str, tuple[int | None, bytes | None]]:
    with raw(folder) as db:
        return {
            path: (phash, colours)
            for path, phash, colours in db.execute("SELECT path, phash, colours FROM images")
        }


def test_a_picture_hash_is_stored_as_a_signed_integer_and_48_bytes_and_found_by_content(
    folder: Path, catalog: Catalog
) -> None:
    picture = PictureHash(-(2**63) + 5, bytes(range(48)))
    catalog.add(
        [
            NewImage("/photos/a.png", 1, 1, "aaa", vector(1), None, picture),
            NewImage("/photos/b.png", 1, 1, "bbb", vector(2)),  # for the index run to hash
        ]
    )
    ids = {path: entry.id for path, entry in catalog.entries().items()}

    assert picture_columns(folder) == {
        "/photos/a.png": (picture.phash, picture.colours),
        "/photos/b.png": (None, None),
    }
    found = catalog.entries_for(list(ids.values()))
    assert (found[ids["/photos/a.png"]].picture, found[ids["/photos/b.png"]].picture) == (
        picture,
        None,
    )
    assert (catalog.picture_hash_for("aaa"), catalog.picture_hash_for("bbb")) == (picture, None)
    assert [entry.path for entry in catalog.unhashed()] == ["/photos/b.png"]


def test_picture_hashes_recorded_later_are_kept_through_moves_and_not_a_new_generation(
    folder: Path, catalog: Catalog
) -> None:
    catalog.add([new_image("/photos/a.png", "aaa")])
    id_ = catalog.entries()["/photos/a.png"].id
    generation = catalog.generation
    picture = PictureHash(12345, bytes([7] * 48))

    catalog.set_picture_hashes([Hashed(id_, picture)])
    catalog.move([(id_, "/photos/b.png", 1, 2)])
    catalog.touch([(id_, 3, 4)])

    assert catalog.entries_for([id_])[id_].picture == picture
    assert catalog.unhashed() == []
    assert catalog.generation == generation + 1  # the move's alone: the FAISS index holds no hashes


def test_a_colour_grid_of_another_length_reads_as_no_picture_hash(
    folder: Path, catalog: Catalog
) -> None:
    catalog.add([new_image("/photos/a.png", "aaa")])
    id_ = catalog.entries()["/photos/a.png"].id
    with raw(folder) as db:
        db.execute("UPDATE images SET phash = 1, colours = ? WHERE id = ?", (bytes(47), id_))

    assert catalog.entries_for([id_])[id_].picture is None
    assert catalog.picture_hash_for("aaa") is None


def test_a_catalog_of_the_schema_before_picture_hashes_is_upgraded_with_its_photos_unhashed(
    folder: Path,
) -> None:
    with Catalog(folder) as catalog:
        catalog.add([new_image("/photos/a.png", "aaa", 1), new_image("/photos/b.png", "bbb", 2)])
    as_of_the_previous_schema(folder)
    before = stored_rows(folder)

    with Catalog(folder) as catalog:
        unhashed = catalog.unhashed()
        assert sorted(entry.path for entry in unhashed) == ["/photos/a.png", "/photos/b.png"]
        catalog.set_picture_hashes([Hashed(unhashed[0].id, PictureHash(1, bytes(48)))])

    assert user_version(folder) == SCHEMA_VERSION
    assert stored_rows(folder) == before
    assert picture_columns(folder) == {
        unhashed[0].path: (1, bytes(48)),
        unhashed[1].path: (None, None),
    }


def test_remove_forgets_entries_and_their_vectors(catalog: Catalog) -> None:
    catalog.add([new_image("/photos/a.png", "aaa", 1), new_image("/photos/b.png", "bbb", 2)])

    catalog.remove([catalog.entries()["/photos/a.png"].id])

    assert set(catalog.entries()) == {"/photos/b.png"}
    assert catalog.embedding_for_hash("aaa") is None


def test_vectors_lists_ids_in_order_with_their_embeddings(catalog: Catalog) -> None:
    catalog.add([new_image(f"/photos/{n}.png", f"h{n}", seed=n) for n in range(3)])
    seed_by_id = {e.id: int(e.sha256[1:]) for e in catalog.entries().values()}

    ids, vectors = catalog.vectors()

    assert ids.dtype == np.int64
    assert list(ids) == sorted(seed_by_id)
    assert vectors.shape == (3, DIM)
    for row, id_ in zip(vectors, ids, strict=True):
        np.testing.assert_array_equal(row, vector(seed_by_id[int(id_)]))


def test_paths_for_maps_ids_back_to_paths(catalog: Catalog) -> None:
    catalog.add([new_image(f"/photos/{n}.png", f"h{n}", seed=n) for n in range(3)])
    ids = {entry.id: path for path, entry in catalog.entries().items()}
    wanted = sorted(ids)[1:]

    assert catalog.paths_for(wanted) == {id_: ids[id_] for id_ in wanted}


def test_paths_for_takes_more_ids_than_sqlite_takes_parameters(catalog: Catalog) -> None:
    catalog.add([new_image(f"/photos/{n}.png", f"h{n}", seed=n) for n in range(3)])
    ids = {entry.id: path for path, entry in catalog.entries().items()}

    # A search for a top-k of a whole large index asks for every id at once.
    assert catalog.paths_for(list(range(1, 300_001))) == ids


def test_empty_catalog_has_no_vectors(catalog: Catalog) -> None:
    ids, vectors = catalog.vectors()
    assert ids.shape == (0,)
    assert vectors.shape == (0, 0)


# --- paths that are not UTF-8 ---------------------------------------------------------------------

# How Python names a file whose name holds the Latin-1 byte for "é" (os.listdir, os.scandir).
ODD = "/photos/latin1-\udce9.jpg"
ODD_BYTES = b"/photos/latin1-\xe9.jpg"


def test_a_path_that_is_not_utf8_is_stored_as_its_bytes_and_reads_back_as_it_was(
    folder: Path, catalog: Catalog
) -> None:
    catalog.add([new_image(ODD, "odd", seed=1), new_image("/photos/latin1-é.jpg", "e", 2)])

    with raw(folder) as db:
        stored = dict(db.execute("SELECT sha256, path FROM images").fetchall())
    assert stored == {"odd": ODD_BYTES, "e": "/photos/latin1-é.jpg"}
    entries = catalog.entries()
    assert set(entries) == {ODD, "/photos/latin1-é.jpg"}
    assert entries[ODD].path == ODD
    assert catalog.paths_for([entries[ODD].id]) == {entries[ODD].id: ODD}


def test_a_path_that_is_not_utf8_can_be_replaced_moved_to_and_removed(catalog: Catalog) -> None:
    catalog.add([new_image(ODD, "old", seed=1)])
    catalog.add([new_image(ODD, "new", seed=2)])
    entry = catalog.entries()[ODD]
    assert (catalog.count(), entry.sha256) == (1, "new")

    catalog.move([(entry.id, "/photos/moved-\udcff.png", 1, 2)])
    assert list(catalog.entries()) == ["/photos/moved-\udcff.png"]

    catalog.remove([entry.id])
    assert catalog.count() == 0


def test_unreadable_files_whose_names_are_not_utf8_are_remembered_and_forgotten(
    catalog: Catalog,
) -> None:
    catalog.set_unreadable([(ODD, 0, 1, "empty file (0 bytes)"), ("/photos/b.jpg", 0, 1, "x")])
    assert catalog.unreadable()[ODD] == (0, 1, "empty file (0 bytes)")

    catalog.forget_unreadable({"/photos/b.jpg"})
    assert list(catalog.unreadable()) == ["/photos/b.jpg"]
    catalog.forget_unreadable(set())
    assert catalog.unreadable() == {}


# --- generation -----------------------------------------------------------------------------------


def test_every_write_to_the_vectors_bumps_the_generation(catalog: Catalog) -> None:
    seen = [catalog.generation]
    catalog.add([new_image("/photos/a.png", "aaa"), new_image("/photos/b.png", "bbb", 1)])
    seen.append(catalog.generation)
    entries = catalog.entries()
    catalog.move([(entries["/photos/a.png"].id, "/photos/moved.png", 1, 1)])
    seen.append(catalog.generation)
    catalog.remove([entries["/photos/b.png"].id])
    seen.append(catalog.generation)
    catalog.clear()
    seen.append(catalog.generation)

    assert seen == sorted(set(seen)), f"generation must strictly increase, got {seen}"


def test_empty_writes_leave_the_generation_alone(catalog: Catalog) -> None:
    catalog.add([new_image("/photos/a.png", "aaa")])
    generation = catalog.generation

    catalog.add([])
    catalog.move([])
    catalog.remove([])
    catalog.touch([])

    assert catalog.generation == generation


def test_generation_survives_reopening(folder: Path) -> None:
    with Catalog(folder) as catalog:
        catalog.add([new_image("/photos/a.png", "aaa")])
        generation = catalog.generation
    with Catalog(folder) as again:
        assert again.generation == generation >= 1


# --- clear and unreadable files -------------------------------------------------------------------


def test_clear_forgets_images_unreadable_files_and_model_but_not_the_generation(
    catalog: Catalog,
) -> None:
    catalog.set_model("clipcli-shapes", "/weights/a.pt")
    catalog.add([new_image("/photos/a.png", "aaa")])
    catalog.set_unreadable([("/photos/bad.jpg", 3, 4, "not an image (unrecognised format)")])
    generation = catalog.generation

    catalog.clear()

    assert catalog.count() == 0
    assert catalog.unreadable() == {}
    assert catalog.model() is None
    # Never back to an old number: a FAISS stamp from before the clear must not look fresh.
    assert catalog.generation > generation


def test_unreadable_files_are_recorded_with_stats_and_reason(catalog: Catalog) -> None:
    catalog.set_unreadable(
        [
            ("/photos/empty.png", 0, 11, "empty file (0 bytes)"),
            ("/photos/notes.jpg", 42, 12, "not an image (unrecognised format)"),
        ]
    )
    catalog.set_unreadable([("/photos/empty.png", 0, 13, "empty file (0 bytes)")])

    assert catalog.unreadable() == {
        "/photos/empty.png": (0, 13, "empty file (0 bytes)"),
        "/photos/notes.jpg": (42, 12, "not an image (unrecognised format)"),
    }


def test_forget_unreadable_keeps_only_the_files_still_bad(catalog: Catalog) -> None:
    catalog.set_unreadable(
        [("/photos/a.jpg", 1, 1, "empty file (0 bytes)"), ("/photos/b.jpg", 2, 2, "corrupt")]
    )

    catalog.forget_unreadable({"/photos/b.jpg"})

    assert catalog.unreadable() == {"/photos/b.jpg": (2, 2, "corrupt")}


def test_each_write_records_its_generation_so_later_changes_can_be_read_back(
    catalog: Catalog,
) -> None:
    catalog.add([new_image("/p/a.jpg", "a", 1), new_image("/p/b.jpg", "b", 2)])
    since = catalog.generation
    catalog.add([new_image("/p/c.jpg", "c", 3), new_image("/p/a.jpg", "a2", 4)])  # a replaced
    catalog.move([(catalog.entries()["/p/b.jpg"].id, "/q/b.jpg", 100, 1)])  # same vector
    ids, vectors = catalog.vectors(changed_after=since)
    by_path = {e.id: p for p, e in catalog.entries().items()}
    assert sorted(by_path[i] for i in ids) == ["/p/a.jpg", "/p/c.jpg"]
    np.testing.assert_array_equal(vectors[[by_path[i] for i in ids].index("/p/a.jpg")], vector(4))
    assert sorted(catalog.ids()) == sorted(by_path)
