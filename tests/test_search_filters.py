"""`clipcli search` filters: below folders, taken between dates, of file types; each applied
inside the vector search, so the top-k is full whenever enough photos pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import exif_photo, make_image


@pytest.fixture
def library(cli, model_args, tmp_path) -> Path:
    root = tmp_path / "photos"
    for number in range(4):
        make_image(root / "beach" / f"b{number}.png", (200, 180, 40 * number))
        make_image(root / "city" / f"c{number}.webp", (40 * number, 60, 90))
    exif_photo(root / "trip" / "first.jpg", "2021:07:04 09:00:00")
    exif_photo(root / "trip" / "second.jpg", "2021:07:05 23:59:30", "blue")
    exif_photo(root / "trip" / "later.jpg", "2023:01:01 12:00:00", "green")
    index = tmp_path / "index"
    result = cli("index", root, "--index", index, *model_args)
    assert result.exit_code == 0, result.stderr
    return index


def found(cli, index: Path, *args: str | Path) -> list[Path]:
    result, hits = cli.json("search", "a photo", "--index", index, *args)
    assert result.exit_code == 0, result.stderr
    return [Path(hit["path"]) for hit in hits]


def test_under_keeps_the_photos_below_a_folder_and_fills_the_top_k(cli, library):
    beach = library.parent / "photos" / "beach"
    hits = found(cli, library, "--under", beach, "--top-k", "4")
    assert len(hits) == 4 and all(hit.parent == beach for hit in hits)
    both = found(
        cli, library, "--under", beach, "--under", beach.with_name("city"), "--top-k", "20"
    )
    assert len(both) == 8


def test_since_and_until_take_whole_days_in_the_cameras_clock(cli, library):
    trip = library.parent / "photos" / "trip"
    days = found(cli, library, "--since", "2021-07-04", "--until", "2021-07-05", "--top-k", "20")
    assert sorted(days) == [trip / "first.jpg", trip / "second.jpg"]
    evening = found(cli, library, "--since", "2021-07-04T10:00", "--until", "2022-01-01")
    assert evening == [trip / "second.jpg"]


def test_ext_keeps_those_file_types_whatever_their_case(cli, library):
    hits = found(cli, library, "--ext", "WEBP, .jpg", "--top-k", "20")
    assert sorted({hit.suffix for hit in hits}) == [".jpg", ".webp"] and len(hits) == 7


def test_filters_combine_and_a_filter_nothing_passes_says_so(cli, library):
    beach = library.parent / "photos" / "beach"
    assert found(cli, library, "--under", beach, "--ext", "jpg") == []
    result = cli("search", "a photo", "--index", library, "--under", beach, "--ext", "jpg")
    assert result.exit_code == 0
    assert result.stderr == "warning: no photo passes the filters\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday"], "--since last tuesday: not a date"),
        (["--since", "2022-01-02", "--until", "2022-01-01"], "comes after --until"),
        (["--ext", " , "], "no file type"),
    ],
)
def test_a_filter_that_cannot_be_read_is_a_usage_error(cli, library, args, message):
    result = cli("search", "a photo", "--index", library, *args)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
