"""The manifest: a CSV appended one row at a time, created with its header, never rewritten."""

from __future__ import annotations

import os

import pytest

from clipcli.errors import ClipcliError
from clipcli.filing.manifest import Manifest, read_rows

COLUMNS = ("source", "destination", "label")


def test_a_new_manifest_starts_with_its_header_and_each_row_is_on_disk_at_once(tmp_path):
    path = tmp_path / "manifest.csv"

    with Manifest(path, COLUMNS) as manifest:
        manifest.append(["/a.jpg", "/sorted/cat/a.jpg", "cat"])
        # read while still open: the row is there already, not waiting in a buffer
        assert path.read_text() == "source,destination,label\n/a.jpg,/sorted/cat/a.jpg,cat\n"


def test_a_second_run_appends_and_leaves_the_earlier_rows_as_they_were(tmp_path):
    path = tmp_path / "manifest.csv"
    with Manifest(path, COLUMNS) as manifest:
        manifest.append(["/a.jpg", "/s/cat/a.jpg", "cat"])
    before = path.read_bytes()

    with Manifest(path, COLUMNS) as manifest:
        manifest.append(["/b, with a comma.jpg", '/s/a "dog"/b.jpg', ""])

    assert path.read_bytes().startswith(before)
    assert read_rows(path, COLUMNS) == [
        {"source": "/a.jpg", "destination": "/s/cat/a.jpg", "label": "cat"},
        {"source": "/b, with a comma.jpg", "destination": '/s/a "dog"/b.jpg', "label": ""},
    ]


def test_a_row_cut_short_is_left_out_and_the_next_row_starts_a_new_line(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("source,destination,label\n/a.jpg,/s/cat/a.jpg,cat\n/b.jpg,/s/d")

    with Manifest(path, COLUMNS) as manifest:
        manifest.append(["/c.jpg", "/s/cat/c.jpg", "cat"])

    assert [row["source"] for row in read_rows(path, COLUMNS)] == ["/a.jpg", "/c.jpg"]


def test_an_empty_file_left_by_a_kill_gets_its_header(tmp_path):
    path = tmp_path / "manifest.csv"
    path.touch()

    with Manifest(path, COLUMNS) as manifest:
        manifest.append(["/a.jpg", "/s/a.jpg", "cat"])

    assert path.read_text().splitlines()[0] == "source,destination,label"


def test_a_file_name_that_is_not_utf8_keeps_its_bytes(tmp_path):
    path = tmp_path / "manifest.csv"
    name = os.fsdecode(b"/photos/latin1-\xe9.jpg")

    with Manifest(path, COLUMNS) as manifest:
        manifest.append([name, "/s/x.jpg", "cat"])

    assert b"/photos/latin1-\xe9.jpg" in path.read_bytes()
    assert read_rows(path, COLUMNS)[0]["source"] == name


def test_a_csv_of_other_columns_is_refused_not_appended_to(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("name,size\nx,1\n")

    with pytest.raises(ClipcliError, match="not a manifest of this kind"):
        Manifest(path, COLUMNS).__enter__()
    with pytest.raises(ClipcliError, match="not a manifest of this kind"):
        read_rows(path, COLUMNS)
    assert path.read_text() == "name,size\nx,1\n"


def test_no_file_means_no_rows(tmp_path):
    assert read_rows(tmp_path / "missing.csv", COLUMNS) == []
