"""Specification of Catalog.filtered_ids: which photos a search's folder, date and file-type
filters keep, paths that are not UTF-8 included, in catalogs dated or not yet dated."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import as_of_the_schema_before_dates

from clipcli.media.taken import local_wall_seconds, wall_seconds
from clipcli.store.catalog import CATALOG_FILE, Catalog
from clipcli.store.catalog_records import NewImage

DAY = 86_400.0
JAN_1 = wall_seconds(datetime(2024, 1, 1))
# Python's name for a file called "caf\xe9.jpg" in Latin-1: not UTF-8, stored as a BLOB.
NOT_UTF8 = os.fsdecode(b"/a/b/caf\xe9.JPG")
IN_NOT_UTF8_FOLDER = os.fsdecode(b"/a/\xe9t\xe9/x.png")

# path -> days after 2024-01-01 it was taken
PHOTOS = {
    "/a/b/1.jpg": 0,
    "/a/b/2.PNG": 1,
    "/a/b/deep/3.jpeg": 2,
    "/a/bc/4.jpg": 3,  # a sibling of /a/b whose name begins the same
    "/a/b.jpg": 4,  # a file beside /a/b, named like it
    "/z/5.png": 5,
    "/z/6.tar.jpg": 6,
    NOT_UTF8: 7,
    IN_NOT_UTF8_FOLDER: 8,
}


def unit(seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return values / np.linalg.norm(values)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    with Catalog(folder) as catalog:
        catalog.add(
            NewImage(path, 1, 1, f"{n:064x}", unit(n), JAN_1 + days * DAY)
            for n, (path, days) in enumerate(PHOTOS.items())
        )
    return folder


def kept(folder: Path, **filters) -> list[str]:
    """The paths of the photos the filters keep, sorted, through a read-only catalog."""
    with Catalog(folder, read_only=True) as catalog:
        ids = catalog.filtered_ids(**filters)
        assert ids.dtype == np.int64 and list(ids) == sorted(set(ids.tolist()))
        return sorted(catalog.paths_for(ids.tolist()).values())


def test_with_no_filter_every_photo_is_kept(folder: Path) -> None:
    assert kept(folder) == sorted(PHOTOS)


def test_a_folder_keeps_what_is_inside_it_at_any_depth_and_not_its_namesakes(
    folder: Path,
) -> None:
    assert kept(folder, under=["/a/b"]) == sorted(
        ["/a/b/1.jpg", "/a/b/2.PNG", "/a/b/deep/3.jpeg", NOT_UTF8]
    )
    assert kept(folder, under=["/a/b/"]) == kept(folder, under=["/a/b"])
    assert kept(folder, under=["/a/bc"]) == ["/a/bc/4.jpg"]
    assert kept(folder, under=["/a/b/deep"]) == ["/a/b/deep/3.jpeg"]
    assert kept(folder, under=["/nowhere"]) == []


def test_several_folders_keep_what_any_of_them_holds(folder: Path) -> None:
    assert kept(folder, under=["/z", "/a/bc", "/a/b/deep"]) == sorted(
        ["/a/b/deep/3.jpeg", "/a/bc/4.jpg", "/z/5.png", "/z/6.tar.jpg"]
    )
    assert kept(folder, under=["/a", "/a/b"]) == kept(folder, under=["/a"])  # kept once
    assert len(kept(folder, under=["/"])) == len(PHOTOS)


def test_a_folder_whose_name_is_not_utf8_keeps_its_photos(folder: Path) -> None:
    assert kept(folder, under=[os.fsdecode(b"/a/\xe9t\xe9")]) == [IN_NOT_UTF8_FOLDER]
    assert kept(folder, under=[os.fsdecode(b"/a/\xe9")]) == []  # a prefix of its name only


def test_dates_keep_photos_taken_within_both_bounds_inclusive(folder: Path) -> None:
    assert kept(folder, since=JAN_1 + 1 * DAY, until=JAN_1 + 3 * DAY) == sorted(
        ["/a/b/2.PNG", "/a/b/deep/3.jpeg", "/a/bc/4.jpg"]
    )
    assert kept(folder, since=JAN_1 + 7 * DAY) == sorted([NOT_UTF8, IN_NOT_UTF8_FOLDER])
    assert kept(folder, until=JAN_1) == ["/a/b/1.jpg"]
    assert kept(folder, since=JAN_1 + 0.5, until=JAN_1 + DAY - 0.5) == []


def test_file_types_are_matched_on_the_name_s_last_suffix_in_any_case(folder: Path) -> None:
    assert kept(folder, extensions=["png"]) == sorted(
        ["/a/b/2.PNG", "/z/5.png", IN_NOT_UTF8_FOLDER]
    )
    assert kept(folder, extensions=["jpeg", "jpg"]) == sorted(
        ["/a/b/1.jpg", "/a/b/deep/3.jpeg", "/a/bc/4.jpg", "/a/b.jpg", "/z/6.tar.jpg", NOT_UTF8]
    )
    assert kept(folder, extensions=[".JPEG"]) == ["/a/b/deep/3.jpeg"]
    assert kept(folder, extensions=["tar"]) == []
    assert kept(folder, extensions=["p_g"]) == []  # a wildcard to SQL, a letter here


def test_filters_given_together_each_apply(folder: Path) -> None:
    assert kept(folder, under=["/a/b"], extensions=["jpg"]) == sorted(["/a/b/1.jpg", NOT_UTF8])
    assert kept(folder, under=["/a", "/z"], since=JAN_1 + 4 * DAY, extensions=["jpg"]) == sorted(
        ["/a/b.jpg", "/z/6.tar.jpg", NOT_UTF8]
    )
    assert kept(folder, extensions=["png"], until=JAN_1 + 5 * DAY) == ["/a/b/2.PNG", "/z/5.png"]


def mtimes(folder: Path) -> dict[str, int]:
    db = sqlite3.connect(folder / CATALOG_FILE)
    try:
        return {
            os.fsdecode(p) if isinstance(p, bytes) else p: m
            for p, m in db.execute("SELECT path, mtime_ns FROM images")
        }
    finally:
        db.close()


@pytest.fixture(params=["UTC0", "UTC-2", "EST+5"])
def time_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """This machine's clock set to a time zone (POSIX TZ: hours west of UTC)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time zones are set through TZ only where time.tzset exists")
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_a_photo_not_dated_yet_counts_as_taken_at_its_mtime_on_this_machines_clock(
    tmp_path: Path, time_zone: str
) -> None:
    folder = tmp_path / "index"
    noon = 1_700_000_000 * 10**9  # 2023-11-14 22:13:20 UTC
    with Catalog(folder) as catalog:
        catalog.add(
            [
                NewImage("/p/undated.jpg", 1, noon, "a" * 64, unit(1)),
                NewImage("/p/dated.jpg", 1, noon, "b" * 64, unit(2), JAN_1),
            ]
        )
    local = local_wall_seconds(noon)
    assert local == 1_700_000_000 + {"UTC0": 0, "UTC-2": 7200, "EST+5": -18000}[time_zone]

    assert kept(folder, since=local, until=local) == ["/p/undated.jpg"]
    assert kept(folder, since=local + 0.001, until=JAN_1 - 0.001) == []
    assert kept(folder, since=JAN_1) == ["/p/dated.jpg"]


def test_a_catalog_of_the_schema_before_dates_filters_by_mtime_and_stays_as_it_was(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "index"
    with Catalog(folder) as catalog:
        catalog.add(
            NewImage(f"/p/{n}.jpg", 1, (1_700_000_000 + n * 100_000) * 10**9, f"{n:064x}", unit(n))
            for n in range(4)
        )
    as_of_the_schema_before_dates(folder)
    before = (folder / CATALOG_FILE).read_bytes()
    second = local_wall_seconds(mtimes(folder)["/p/1.jpg"])

    assert kept(folder, since=second, until=second + 100_000) == ["/p/1.jpg", "/p/2.jpg"]
    assert kept(folder, under=["/p"], extensions=["jpg"]) == [f"/p/{n}.jpg" for n in range(4)]
    assert (folder / CATALOG_FILE).read_bytes() == before
