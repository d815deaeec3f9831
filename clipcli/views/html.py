"""Results as one self-contained HTML page that opens offline in any browser.

The stylesheet and every thumbnail (a data: URI) are inlined, so the file can be mailed or
archived as it is. The pages hold no script, and Jinja escapes every path and label.
"""

from __future__ import annotations

import base64
import io
import os
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import markupsafe
from PIL import Image

from clipcli.atomic_files import write_file
from clipcli.literal import unicode_safe
from clipcli.media.decode import ImageDecodeError
from clipcli.media.thumbnails import THUMBNAIL_SIZE, thumbnail_jpeg

if TYPE_CHECKING:
    from clipcli.classify import Classification
    from clipcli.dupes import DupesReport
    from clipcli.evaluate import EvalReport, Mistake, TemplateScore
    from clipcli.search import SearchHit

# Mistakes shown per template set: past this the page grows by megabytes and says little more.
MISTAKES_SHOWN = 200


@dataclass(frozen=True)
class Thumbnail:
    """One image as a page shows it: a link to the original, and its thumbnail or why not."""

    href: str
    src: str | None = None  # a data: URI of the JPEG
    width: int = 0
    height: int = 0
    reason: str | None = None  # why there is no thumbnail


@dataclass(frozen=True)
class Cell:
    """One confusion-matrix cell: its count, and its share of the true class's images."""

    count: int
    share: float


@dataclass(frozen=True)
class Section:
    """One template set's part of the eval page."""

    score: TemplateScore
    is_open: bool
    heatmap: list[list[Cell]]
    mistakes: list[Mistake]
    more_mistakes: int


def search_page(
    hits: Sequence[SearchHit],
    out: Path,
    *,
    query: str | None,
    images: Sequence[Path] = (),
    not_images: Sequence[Path] = (),
) -> None:
    """Write the hits of a search, best first, as a grid of thumbnails under the query and the
    example images it moved towards (and away from)."""
    towards, away = [str(path) for path in images], [str(path) for path in not_images]
    thumbs = _thumbnails([*towards, *away, *(hit.path for hit in hits)])
    html = _render("search.html", hits=hits, query=query, towards=towards, away=away, thumbs=thumbs)
    write_file(out, html.encode("utf-8"), what="the page")


def classify_page(results: Sequence[Classification], out: Path) -> None:
    """Write each image with its labels as bars, then the unreadable ones and empty folders."""
    labelled = [result for result in results if result.predictions is not None]
    html = _render(
        "classify.html",
        labelled=labelled,
        errors=[result for result in results if result.error is not None],
        warnings=[result for result in results if result.warning is not None],
        thumbs=_thumbnails(result.path for result in labelled),
    )
    write_file(out, html.encode("utf-8"), what="the page")


def eval_page(report: EvalReport, out: Path) -> None:
    """Write an eval run: every template set's scores, then per template set (the best one
    open) its classes, its confusion matrix and its most confident mistakes."""
    sections = [_section(score, i == 0) for i, score in enumerate(report.best_first())]
    shown = (m.path for section in sections for m in section.mistakes)
    html = _render("eval.html", report=report, sections=sections, thumbs=_thumbnails(shown))
    write_file(out, html.encode("utf-8"), what="the page")


def dupes_page(report: DupesReport, out: Path) -> None:
    """Write each group of near-duplicates as a row of thumbnails: its keeper first, then the
    copies with their similarity and hash distance to it."""
    shown = (path for group in report.groups for path in (group.keeper, *group.extras))
    html = _render("dupes.html", report=report, thumbs=_thumbnails(shown))
    write_file(out, html.encode("utf-8"), what="the page")


def _section(score: TemplateScore, is_open: bool) -> Section:
    mistakes = sorted(score.mistakes, key=lambda m: -m.score)  # stable: ties keep their order
    return Section(
        score=score,
        is_open=is_open,
        heatmap=_heatmap(score.confusion),
        mistakes=mistakes[:MISTAKES_SHOWN],
        more_mistakes=max(0, len(mistakes) - MISTAKES_SHOWN),
    )


def _heatmap(confusion: Sequence[Sequence[int]]) -> list[list[Cell]]:
    """Shares per row, so a rare class's mistakes show as clearly as a common one's."""
    rows = []
    for row in confusion:
        total = sum(row)
        rows.append([Cell(count, count / total if total else 0.0) for count in row])
    return rows


def _thumbnails(paths: Iterable[str]) -> dict[str, Thumbnail]:
    """Each file's thumbnail once, however often the page shows it."""
    found: dict[str, Thumbnail] = {}
    for path in paths:
        if path not in found:
            found[path] = _thumbnail(path)
    return found


def _thumbnail(path: str) -> Thumbnail:
    href = _file_uri(path)
    try:
        data = thumbnail_jpeg(Path(path), THUMBNAIL_SIZE)
    except ImageDecodeError as exc:
        return Thumbnail(href, reason=exc.reason)
    with Image.open(io.BytesIO(data)) as jpeg:  # reads the header only
        width, height = jpeg.size
    src = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
    return Thumbnail(href, src, width, height)


def _file_uri(path: str) -> str:
    """The absolute file:// URI of `path`, also for a name whose bytes are not UTF-8."""
    absolute = Path(path).absolute()
    try:
        return absolute.as_uri()
    except UnicodeEncodeError:  # Pythons differ in how as_uri encodes a name
        return "file://" + urllib.parse.quote(os.fsencode(absolute))


def _text(value: object) -> object:
    """Every value a template writes: an undecodable byte becomes `\\xNN`, as the terminal
    output writes it, instead of failing the UTF-8 encoding of the whole page."""
    if not isinstance(value, str):
        return value
    safe = unicode_safe(value)
    if safe == value:
        return value  # as it was: markup the templates made stays markup
    return markupsafe.Markup(safe) if isinstance(value, markupsafe.Markup) else safe


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("clipcli.views", "templates"),
        autoescape=True,  # every template, whatever its name: paths and labels are the user's
        undefined=jinja2.StrictUndefined,
        finalize=_text,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["file_name"] = os.path.basename
    return environment


def _render(template: str, **context: object) -> str:
    return _environment().get_template(template).render(**context)
