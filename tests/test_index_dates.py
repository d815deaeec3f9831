"""Specification of when photos were taken, as `clipcli index` records them: read from EXIF (else
the file's mtime) when a photo is added, kept while its content stays, and read for a catalog
made before dates were recorded without embedding anything again."""

from __future__ import annotations

import os
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from conftest import TEST_MODEL, as_of_the_schema_before_dates, exif_photo, make_image

from clipcli.index import update_index
from clipcli.media.taken import local_wall_seconds, wall_seconds
from clipcli.store.catalog import CATALOG_FILE, SCHEMA_VERSION

JULY_4TH = wall_seconds(datetime(2021, 7, 4, 12, 30))


def stored(index: Path) -> dict[str, tuple[float | None, bytes]]:
    """path -> (taken_at, embedding blob), as on disk."""
    db = sqlite3.connect(index / CATALOG_FILE)
    try:
        rows = db.execute("SELECT path, taken_at, embedding FROM images")
        return {path: (taken, blob) for path, taken, blob in rows}
    finally:
        db.close()


def taken(index: Path) -> dict[str, float | None]:
    return {path: when for path, (when, _) in stored(index).items()}


def mtime_date(path: Path) -> float:
    return local_wall_seconds(path.stat().st_mtime_ns)


@pytest.fixture
def dated_folder(tmp_path: Path) -> Path:
    """Two photos with EXIF dates, one without."""
    folder = tmp_path / "photos"
    exif_photo(folder / "beach.jpg", "2021:07:04 12:30:00", "orange")
    exif_photo(folder / "trip" / "hill.jpg", "2019:05:01 08:00:00", "green")
    make_image(folder / "scan.png", "blue")
    return folder


def test_new_photos_are_dated_from_exif_and_others_by_their_mtime(
    run_index, dated_folder: Path, index: Path
) -> None:
    run_index(dated_folder)

    assert taken(index) == {
        str(dated_folder / "beach.jpg"): JULY_4TH,
        str(dated_folder / "trip" / "hill.jpg"): wall_seconds(datetime(2019, 5, 1, 8)),
        str(dated_folder / "scan.png"): pytest.approx(mtime_date(dated_folder / "scan.png")),
    }


def test_moved_and_touched_photos_keep_their_date_and_copies_and_new_content_get_one(
    run_index, dated_folder: Path, index: Path
) -> None:
    run_index(dated_folder)
    scan_date = taken(index)[str(dated_folder / "scan.png")]
    moved = dated_folder / "archive" / "scan.png"
    moved.parent.mkdir()
    (dated_folder / "scan.png").rename(moved)
    os.utime(moved, ns=(0, moved.stat().st_mtime_ns + 86_400 * 10**9))  # and touched
    copy = shutil.copy(dated_folder / "beach.jpg", dated_folder / "beach copy.jpg")
    exif_photo(dated_folder / "trip" / "hill.jpg", "2020:02:02 20:20:20", "red")  # new content

    report = run_index(dated_folder)

    assert (report["moved"], report["added"], report["updated"]) == (1, 1, 1)
    dates = taken(index)
    assert dates[str(moved)] == scan_date  # the content is the same: so is the photo's date
    assert dates[str(copy)] == JULY_4TH
    assert dates[str(dated_folder / "trip" / "hill.jpg")] == wall_seconds(
        datetime(2020, 2, 2, 20, 20, 20)
    )


def test_a_catalog_made_before_dates_is_dated_on_the_next_run_without_embedding_again(
    run_index, dated_folder: Path, index: Path, decoded: list[str]
) -> None:
    expected = (run_index(dated_folder), taken(index))
    vectors = {path: blob for path, (_, blob) in stored(index).items()}
    as_of_the_schema_before_dates(index)
    decoded.clear()

    report = run_index(dated_folder)

    assert (report["added"], report["updated"], report["moved"], report["removed"]) == (0, 0, 0, 0)
    assert (report["unchanged"], report["total"]) == (3, 3)
    assert sorted(decoded) == sorted(vectors)  # once each, for its picture hash alone
    assert {path: blob for path, (_, blob) in stored(index).items()} == vectors
    assert taken(index) == expected[1]
    db = sqlite3.connect(index / CATALOG_FILE)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


class Phases:
    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    def phase(self, description: str, total: int) -> None:
        self.seen[description] = [total, 0]

    def advance(self, count: int) -> None:
        self.seen[list(self.seen)[-1]][1] += count


def test_dating_an_older_catalog_is_a_phase_of_its_own(
    run_index, random_checkpoint: Path, dated_folder: Path, index: Path
) -> None:
    run_index(dated_folder)
    as_of_the_schema_before_dates(index)
    progress = Phases()
    model = {"model": TEST_MODEL, "pretrained": str(random_checkpoint)}

    update_index([dated_folder], index, **model, progress=progress)

    assert progress.seen["Reading dates"] == [3, 3]
    assert "Embedding" not in progress.seen
    again = Phases()
    update_index([dated_folder], index, **model, progress=again)
    assert "Reading dates" not in again.seen  # nothing left to date
