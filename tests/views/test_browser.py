"""The HTML pages as a browser draws them: headless Chromium takes a screenshot, and every
thumbnail must be on it, recognisably the photo it stands for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from headless_browser import find_chromium, screenshot
from PIL import Image
from sample_photos import SAMPLES, save_photo
from scipy import ndimage

from clipcli.media.thumbnails import thumbnail
from clipcli.search import SearchHit
from clipcli.views.html import search_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        find_chromium() is None,
        reason="no Chromium on PATH (`make test-browser` installs Debian's chromium)",
    ),
]

# A page's own colours (page, cards, empty frame) each cover a large share of the screenshot;
# text covers little, and a photo spreads over thousands of colours.
BACKGROUND_SHARE = 0.02
FAR_FROM_BACKGROUND = 40  # in any channel, 0..255
SMALLEST_PICTURE = 64  # px on each side; text lines are much lower
COMPARED_AT = (32, 32)


def drawn_pictures(png: Path) -> list[np.ndarray]:
    """The regions of the screenshot unlike the page's own colours and at least
    SMALLEST_PICTURE px each way: the pictures drawn on it, as RGB arrays in reading order."""
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    backgrounds = colours[counts > BACKGROUND_SHARE * counts.sum()]
    distance = np.abs(pixels[:, :, None, :] - backgrounds[None, None]).max(axis=3).min(axis=2)
    # Pale patches inside a photo (a white spacesuit) would split it: close and fill them.
    unlike = ndimage.binary_fill_holes(ndimage.binary_closing(distance > FAR_FROM_BACKGROUND))
    regions, _ = ndimage.label(unlike)
    boxes = [
        (rows, columns)
        for rows, columns in ndimage.find_objects(regions)
        if min(rows.stop - rows.start, columns.stop - columns.start) >= SMALLEST_PICTURE
    ]
    return [pixels[box].astype(np.uint8) for box in reading_order(boxes)]


def reading_order(boxes: list[tuple[slice, slice]]) -> list[tuple[slice, slice]]:
    """Row by row, left to right: a grid centres each picture in its cell, so the pictures
    of one row share their middle height (to a pixel or so), whatever their shapes."""
    rows: list[list[tuple[slice, slice]]] = []
    for box in sorted(boxes, key=_middle):
        if rows and _middle(box) - _middle(rows[-1][0]) < SMALLEST_PICTURE / 2:
            rows[-1].append(box)
        else:
            rows.append([box])
    return [box for row in rows for box in sorted(row, key=lambda box: box[1].start)]


def _middle(box: tuple[slice, slice]) -> float:
    return (box[0].start + box[0].stop) / 2


def difference(drawn: np.ndarray, photo: Image.Image) -> float:
    """Mean absolute difference (0..255) of the two pictures, both scaled to COMPARED_AT."""
    small = np.asarray(Image.fromarray(drawn).resize(COMPARED_AT, Image.Resampling.BOX), float)
    expected = np.asarray(photo.resize(COMPARED_AT, Image.Resampling.BOX), float)
    return float(np.abs(small - expected).mean())


def test_every_thumbnail_of_a_search_page_is_drawn_in_its_hits_place(tmp_path: Path):
    photos = [save_photo(name, tmp_path / "photos" / f"{name}.jpg") for name in SAMPLES]
    hits = [SearchHit(rank, str(path), 0.3) for rank, path in enumerate(photos, start=1)]
    page = tmp_path / "search.html"
    search_page(hits, page, query="a photo")

    # Wide enough for one row of five: the grid's order is then the hits' order.
    drawn = drawn_pictures(screenshot(page, tmp_path / "search.png", width=1280, height=800))

    assert len(drawn) == len(photos)
    for path, picture in zip(photos, drawn, strict=True):
        assert picture.std() > 20  # a photo, not a flat box
        differences = {other.name: difference(picture, thumbnail(other)) for other in photos}
        assert min(differences, key=differences.__getitem__) == path.name, differences
        assert differences[path.name] < 12, differences
