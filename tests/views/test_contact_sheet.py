"""Contact sheets: a PNG grid of thumbnails, each cell showing its photo and its caption."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sample_photos import save_photo

from clipcli.classify import Classification
from clipcli.media.thumbnails import thumbnail
from clipcli.search import SearchHit
from clipcli.views.contact_sheet import (
    PLACEHOLDER,
    Grid,
    Tile,
    classify_tiles,
    grid,
    search_tiles,
    sheet_size,
    write_contact_sheet,
)
from clipcli.zeroshot.scorer import Prediction

PHOTOS = ("chelsea", "astronaut", "coffee")


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    return [save_photo(name, tmp_path / "photos" / f"{name}.jpg") for name in PHOTOS]


def solid(path: Path, colour: tuple[int, int, int], size=(120, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def crop(sheet: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return sheet[top:bottom, left:right]


def centre(area: np.ndarray, side: int = 64) -> np.ndarray:
    """The middle `side` x `side` square, which any thumbnail of these photos covers."""
    rows, columns = area.shape[:2]
    top, left = (rows - side) // 2, (columns - side) // 2
    return area[top : top + side, left : left + side]


def dark_pixels(area: np.ndarray) -> int:
    return int((area.mean(axis=2) < 110).sum())


def tiles_for(paths: list[Path]) -> list[Tile]:
    return [Tile(str(path), (f"#{n}", path.name)) for n, path in enumerate(paths, 1)]


def test_the_sheet_is_a_png_of_exactly_the_size_sheet_size_gives(photos, tmp_path):
    for count, columns in [(1, None), (3, None), (7, None), (7, 3), (12, 4)]:
        out = tmp_path / f"sheet-{count}-{columns}.png"
        tiles = tiles_for([photos[n % 3] for n in range(count)])

        size = write_contact_sheet(tiles, out, columns=columns)

        with Image.open(out) as image:
            assert image.format == "PNG"
            assert image.size == size == sheet_size(count, columns)


def test_each_photo_lands_in_its_own_cell_in_reading_order(photos, tmp_path):
    red = solid(tmp_path / "red.png", (220, 20, 20))
    blue = solid(tmp_path / "blue.png", (20, 40, 200))
    paths = [*photos, red, blue]
    out = tmp_path / "sheet.png"

    write_contact_sheet(tiles_for(paths), out)

    sheet = pixels(out)
    layout = grid(len(paths))
    for index, path in enumerate(paths):
        drawn = centre(crop(sheet, layout.thumbnail_box(index))).mean(axis=(0, 1))
        expected = centre(np.asarray(thumbnail(path), dtype=np.float64)).mean(axis=(0, 1))
        assert np.abs(drawn - expected).max() < 4, path.name
    assert np.abs(centre(crop(sheet, layout.thumbnail_box(3))) - (220, 20, 20)).max() < 3


def test_a_thumbnail_keeps_its_shape_centred_on_white(tmp_path):
    wide = solid(tmp_path / "wide.png", (0, 128, 0), size=(400, 100))  # 256 x 64 as a thumbnail
    out = tmp_path / "sheet.png"

    write_contact_sheet([Tile(str(wide), ("wide",))], out)

    area = crop(pixels(out), grid(1).thumbnail_box(0))
    assert (area[:90] == 255).all() and (area[-90:] == 255).all()  # above and below: white
    assert np.abs(area[100:156] - (0, 128, 0)).max() < 3  # the middle band: the picture


def test_captions_are_dark_text_in_the_strip_under_each_thumbnail(photos, tmp_path):
    tiles = [Tile(str(photos[0]), ("#1  0.312", "chelsea.jpg")), Tile(str(photos[1]), ())]
    out = tmp_path / "sheet.png"

    write_contact_sheet(tiles, out)

    sheet, layout = pixels(out), grid(2)
    assert dark_pixels(crop(sheet, layout.caption_box(0))) > 40
    assert (crop(sheet, layout.caption_box(1)) == 255).all()  # no caption: nothing drawn


def test_a_file_that_cannot_be_read_gets_a_grey_placeholder_with_its_reason(photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG")
    paths = [photos[0], tmp_path / "deleted.jpg", broken]
    out = tmp_path / "sheet.png"

    write_contact_sheet(tiles_for(paths), out)

    sheet, layout = pixels(out), grid(3)
    for index in (1, 2):
        area = crop(sheet, layout.thumbnail_box(index))
        grey = (area == PLACEHOLDER).all(axis=2).mean()
        assert grey > 0.8  # the square is grey...
        assert dark_pixels(area) > 40  # ...with the reason written on it
    assert dark_pixels(crop(sheet, layout.caption_box(1))) > 40  # and the caption still there


def test_columns_given_are_kept_and_rows_added_for_the_rest(photos, tmp_path):
    out = tmp_path / "sheet.png"

    size = write_contact_sheet(tiles_for([photos[n % 3] for n in range(7)]), out, columns=3)

    assert grid(7, 3) == Grid(columns=3, rows=3)
    assert size[0] == sheet_size(3)[0] < sheet_size(7)[0]  # three across, not five
    assert size[1] == sheet_size(9, 3)[1] > sheet_size(7)[1]  # three rows, not two
    sheet = pixels(out)
    for empty in (7, 8):  # the last row's free cells stay blank
        assert (crop(sheet, grid(9, 3).thumbnail_box(empty)) == 255).all()


def test_a_short_sheet_has_no_empty_columns():
    assert grid(2) == Grid(columns=2, rows=1)
    assert sheet_size(2, columns=5) == sheet_size(2)
    assert grid(11) == Grid(columns=5, rows=3)


def test_a_file_name_that_is_not_utf8_is_drawn_like_any_other(tmp_path):
    name = os.fsdecode(os.fsencode(tmp_path) + b"/latin1-\xe9.jpg")
    Image.new("RGB", (64, 48), (128, 0, 128)).save(name)
    out = tmp_path / "sheet.png"

    write_contact_sheet(search_tiles([SearchHit(1, name, 0.3)]), out)

    sheet, layout = pixels(out), grid(1)
    assert np.abs(centre(crop(sheet, layout.thumbnail_box(0)), 32) - (128, 0, 128)).max() < 8
    assert dark_pixels(crop(sheet, layout.caption_box(0))) > 40


def test_a_caption_too_long_for_its_cell_is_cut_and_stays_inside_it(photos, tmp_path):
    long_name = "a-very-long-name-" * 14 + ".jpg"  # 242 characters, near the file name limit
    tiles = [Tile(str(photos[0]), (long_name, long_name)), Tile(str(photos[1]), ("short",))]
    out = tmp_path / "sheet.png"

    write_contact_sheet(tiles, out)

    sheet, layout = pixels(out), grid(2)
    left, top, right, bottom = layout.caption_box(0)
    assert dark_pixels(sheet[top:bottom, left:right]) > 100
    assert (sheet[top:bottom, :left] == 255).all()  # the margin on the left is clear
    assert (sheet[top:bottom, right : layout.caption_box(1)[0]] == 255).all()  # and the gutter


def test_search_tiles_caption_each_hit_with_rank_score_and_file_name():
    hits = [SearchHit(1, "/photos/cat.jpg", 0.3124), SearchHit(2, "/photos/trip/dog.png", 0.29)]

    assert search_tiles(hits) == [
        Tile("/photos/cat.jpg", ("#1  0.312", "cat.jpg")),
        Tile("/photos/trip/dog.png", ("#2  0.290", "dog.png")),
    ]


def test_classify_tiles_show_the_top_label_or_the_error_and_leave_folders_out():
    results = [
        Classification("/p/cat.jpg", [Prediction("cat", 0.873, 0.31), Prediction("dog", 0.1, 0.2)]),
        Classification("/p/broken.jpg", error="not an image (unrecognised format)"),
        Classification("/p/empty", warning="no images found"),
    ]

    assert classify_tiles(results) == [
        Tile("/p/cat.jpg", ("87.3%  cat", "cat.jpg")),
        Tile("/p/broken.jpg", ("not an image (unrecognised format)", "broken.jpg")),
    ]


def test_a_sheet_needs_at_least_one_tile_and_one_column(photos, tmp_path):
    with pytest.raises(ValueError, match="at least one tile"):
        write_contact_sheet([], tmp_path / "sheet.png")
    with pytest.raises(ValueError, match="at least one column"):
        sheet_size(3, columns=0)
    assert not (tmp_path / "sheet.png").exists()
