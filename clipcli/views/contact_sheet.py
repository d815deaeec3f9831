"""Contact sheets: the photos of a result as one PNG grid of thumbnails, each with a caption
under it, to share the result or to look at it where the terminal shows no images."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

from clipcli.atomic_files import write_file
from clipcli.media.decode import ImageDecodeError
from clipcli.media.thumbnails import THUMBNAIL_SIZE, thumbnail
from clipcli.views.drawn_text import drawable

if TYPE_CHECKING:
    from clipcli.classify import Classification
    from clipcli.search import SearchHit

    Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

DEFAULT_COLUMNS = 5
CAPTION_LINES = 2  # lines under each thumbnail; a longer caption keeps its first ones
FONT_SIZE = 14
LINE_HEIGHT = 18
CAPTION_GAP = 6  # between a thumbnail's square and its caption
GUTTER = 16  # between cells
MARGIN = 20  # around the grid
CELL_WIDTH = THUMBNAIL_SIZE
CELL_HEIGHT = THUMBNAIL_SIZE + CAPTION_GAP + CAPTION_LINES * LINE_HEIGHT
PLACEHOLDER_LINES = 4  # of the reason a file shows no thumbnail

BACKGROUND = (255, 255, 255)
INK = (34, 34, 34)
PLACEHOLDER = (204, 204, 204)
PLACEHOLDER_INK = (68, 68, 68)
ELLIPSIS = "\u2026"

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Tile:
    """One photo of a sheet and the lines under it, e.g. ("#1  0.312", "cat.jpg")."""

    path: str
    caption: tuple[str, ...]


@dataclass(frozen=True)
class Grid:
    """Where each tile of a sheet goes: `columns` cells across, `rows` down, in reading order."""

    columns: int
    rows: int

    @property
    def size(self) -> tuple[int, int]:
        """The sheet's (width, height) in px."""
        return (
            2 * MARGIN + self.columns * CELL_WIDTH + (self.columns - 1) * GUTTER,
            2 * MARGIN + self.rows * CELL_HEIGHT + (self.rows - 1) * GUTTER,
        )

    def thumbnail_box(self, index: int) -> Box:
        """The square (left, top, right, bottom) that tile `index`'s thumbnail is centred in."""
        row, column = divmod(index, self.columns)
        left = MARGIN + column * (CELL_WIDTH + GUTTER)
        top = MARGIN + row * (CELL_HEIGHT + GUTTER)
        return left, top, left + THUMBNAIL_SIZE, top + THUMBNAIL_SIZE

    def caption_box(self, index: int) -> Box:
        """The strip under the thumbnail that holds tile `index`'s caption lines."""
        left, _, right, bottom = self.thumbnail_box(index)
        return left, bottom + CAPTION_GAP, right, bottom + CAPTION_GAP + CAPTION_LINES * LINE_HEIGHT


def grid(count: int, columns: int | None = None) -> Grid:
    """The grid for `count` tiles: `columns` across (DEFAULT_COLUMNS when not given), never
    more than there are tiles, so that a short sheet is not padded with empty cells."""
    if count < 1:
        raise ValueError("a contact sheet needs at least one tile")
    if columns is not None and columns < 1:
        raise ValueError(f"a contact sheet needs at least one column, not {columns}")
    across = min(count, columns or DEFAULT_COLUMNS)
    return Grid(across, -(-count // across))


def sheet_size(count: int, columns: int | None = None) -> tuple[int, int]:
    """The (width, height) in px of the sheet for `count` tiles."""
    return grid(count, columns).size


def search_tiles(hits: Sequence[SearchHit]) -> list[Tile]:
    """A tile per hit, best first: its rank and score, then its file name."""
    return [Tile(hit.path, (f"#{hit.rank}  {hit.score:.3f}", _file_name(hit.path))) for hit in hits]


def classify_tiles(results: Sequence[Classification]) -> list[Tile]:
    """A tile per classified file: the top label with its probability, or the error that
    kept the file from being classified, then its file name. Folders that held no images
    (warning entries) have no photo to show and are left out."""
    tiles = []
    for result in results:
        if result.warning is not None:
            continue
        if result.predictions:
            top = result.predictions[0]
            # The probability first: a long label is what the ellipsis should cut.
            headline = f"{top.score:.1%}  {top.label}"
        else:
            headline = result.error or "no prediction"
        tiles.append(Tile(result.path, (headline, _file_name(result.path))))
    return tiles


def write_contact_sheet(
    tiles: Sequence[Tile], out: Path, *, columns: int | None = None
) -> tuple[int, int]:
    """Draw the tiles as a PNG at `out` (replaced whole) and return its (width, height).

    A file that cannot be read gets a grey square with the reason instead of its thumbnail.
    Raises ValueError for no tiles, ClipcliError when `out` cannot be written.
    """
    layout = grid(len(tiles), columns)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(FONT_SIZE)
    for index, tile in enumerate(tiles):
        _draw_thumbnail(sheet, draw, tile.path, layout.thumbnail_box(index), font)
        left, top, right, _ = layout.caption_box(index)
        for number, line in enumerate(tile.caption[:CAPTION_LINES]):
            _draw_centred(
                draw, drawable(line), (left, right), top + number * LINE_HEIGHT, font, INK
            )
    buffer = io.BytesIO()
    # zlib's fastest level: a sheet of 50 photos is then written in a quarter of a second
    # instead of most of one, for a file about 15% larger.
    sheet.save(buffer, format="PNG", compress_level=1)
    write_file(out, buffer.getvalue(), what="the contact sheet")
    return layout.size


def _file_name(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or path


def _draw_thumbnail(
    sheet: Image.Image, draw: ImageDraw.ImageDraw, path: str, box: Box, font: Font
) -> None:
    left, top, right, bottom = box
    try:
        image = thumbnail(Path(path))
    except ImageDecodeError as exc:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=PLACEHOLDER)
        lines = _wrapped(draw, drawable(exc.reason), font, right - left - 16, PLACEHOLDER_LINES)
        first = (top + bottom - len(lines) * LINE_HEIGHT) // 2
        for number, line in enumerate(lines):
            _draw_centred(
                draw, line, (left, right), first + number * LINE_HEIGHT, font, PLACEHOLDER_INK
            )
        return
    with image:
        offset = (
            left + (right - left - image.width) // 2,
            top + (bottom - top - image.height) // 2,
        )
        sheet.paste(image, offset)


def _draw_centred(
    draw: ImageDraw.ImageDraw,
    text: str,
    span: tuple[int, int],
    top: int,
    font: Font,
    fill: tuple[int, int, int],
) -> None:
    """One line, cut with an ellipsis to fit between span's ends, centred between them."""
    left, right = span
    line = _fitted(draw, text, font, right - left)
    width = draw.textlength(line, font=font)
    draw.text((left + (right - left - width) / 2, top), line, font=font, fill=fill)


def _fitted(draw: ImageDraw.ImageDraw, text: str, font: Font, width: float) -> str:
    """`text`, or its longest start that fits in `width` px with an ellipsis after it."""
    if draw.textlength(text, font=font) <= width:
        return text
    shortest, longest = 0, len(text)
    while shortest < longest:  # a binary search: a file name may be hundreds of characters
        middle = (shortest + longest + 1) // 2
        if draw.textlength(text[:middle] + ELLIPSIS, font=font) <= width:
            shortest = middle
        else:
            longest = middle - 1
    return text[:shortest].rstrip() + ELLIPSIS


def _wrapped(
    draw: ImageDraw.ImageDraw, text: str, font: Font, width: float, max_lines: int
) -> list[str]:
    """`text` broken into lines at spaces, at most `max_lines`, the last one cut to fit."""
    words = text.split()
    lines: list[str] = []
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line = f"{line} {words.pop(0)}"
        if len(lines) == max_lines - 1 and words:
            line = " ".join([line, *words])
        lines.append(_fitted(draw, line, font, width))
    return lines


@cache
def _font(size: int) -> Font:
    font_file = _caption_font_file()
    if font_file is not None:
        with contextlib.suppress(OSError, ImportError):  # ImportError: Pillow without FreeType
            return ImageFont.truetype(str(font_file), size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0: only the small bitmap font, of one size
        return ImageFont.load_default()


def _caption_font_file() -> Path | None:
    """DejaVu Sans, which matplotlib (installed for the confusion plots) ships: it draws
    accented, Greek and Cyrillic file names that Pillow's own font, ASCII only, shows as boxes.
    Found without importing matplotlib, which takes a quarter of a second."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None
