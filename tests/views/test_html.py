"""Specification of the HTML pages: one self-contained file per page, every name escaped, every
thumbnail inlined and linked to its photo, written whole or not at all."""

from __future__ import annotations

import base64
import io
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import make_image, make_non_utf8_image
from PIL import Image
from sample_photos import save_photo

from clipcli.classify import NO_IMAGES, Classification
from clipcli.errors import ClipcliError
from clipcli.evaluate import ClassScore, EvalReport, Mistake, Skipped, TemplateScore
from clipcli.media import thumbnails
from clipcli.search import SearchHit
from clipcli.views import html
from clipcli.views.html import classify_page, eval_page, search_page
from clipcli.zeroshot.scorer import Prediction

HOSTILE_LABEL = "<img src=x onerror=alert(1)>"


# Search


def test_a_search_page_shows_one_jpeg_thumbnail_per_hit(tmp_path: Path):
    hits = ranked([save_photo("chelsea", tmp_path / "cat.jpg"), big_photo(tmp_path)])
    page = written(search_page, hits, query="a cat")

    images = page.find_all("img", "hit")
    assert len(images) == 2
    for image in images:
        jpeg = decoded(image.attrs["src"])
        assert jpeg.format == "JPEG"
        assert max(jpeg.size) <= 256
        assert (int(image.attrs["width"]), int(image.attrs["height"])) == jpeg.size
        assert image.attrs["alt"]


def test_hits_come_in_rank_order_with_their_score_and_path(tmp_path: Path):
    paths = [save_photo(name, tmp_path / f"{name}.jpg") for name in ("coffee", "rocket")]
    hits = [SearchHit(1, str(paths[0]), 0.3124), SearchHit(2, str(paths[1]), 0.2871)]
    page = written(search_page, hits, query="an espresso")

    cards = page.find_all("li", "card")
    assert [card.find("span", "rank").text() for card in cards] == ["#1", "#2"]
    assert [card.find("span", "score").text() for card in cards] == ["0.312", "0.287"]
    assert [card.find("p", "path").text() for card in cards] == [str(p) for p in paths]
    assert "an espresso" in page.find("h1").text()


def test_each_thumbnail_links_to_its_original_file(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = Path("photos") / "cat.jpg"
    save_photo("chelsea", tmp_path / relative)
    page = written(search_page, ranked([relative]), query="a cat")

    href = page.find("img", "hit").parent.attrs["href"]
    assert href == (tmp_path / relative).as_uri()
    assert Path(urllib.parse.unquote(urllib.parse.urlparse(href).path)) == tmp_path / relative


def test_the_example_image_of_an_image_search_is_shown_apart_from_the_hits(tmp_path: Path):
    example = save_photo("astronaut", tmp_path / "example.jpg")
    hits = ranked([save_photo(name, tmp_path / f"{name}.jpg") for name in ("coffee", "rocket")])
    page = written(search_page, hits, query=None, images=[example])

    assert len(page.find_all("img", "hit")) == 2
    assert len(page.find_all("img", "example")) == 1
    assert page.find("img", "example").parent.attrs["href"] == example.as_uri()
    assert page.find("h1").text() == "Search by example"


def test_an_unreadable_or_missing_file_shows_why_in_place_of_its_thumbnail(tmp_path: Path):
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(b"not a JPEG at all")
    gone = tmp_path / "gone.jpg"
    hits = ranked([save_photo("coffee", tmp_path / "coffee.jpg"), damaged, gone])
    page = written(search_page, hits, query="coffee")

    assert len(page.find_all("img", "hit")) == 1
    reasons = [box.text() for box in page.find_all("span", "unreadable")]
    assert len(reasons) == 2
    assert "not an image (unrecognised format)" in reasons[0]
    assert "no such file" in reasons[1]
    assert [card.find("p", "path").text() for card in page.find_all("li", "card")] == [
        str(hit.path) for hit in hits
    ]


def test_a_search_that_found_nothing_says_so(tmp_path: Path):
    page = written(search_page, [], query="a unicorn")

    assert page.find_all("img") == []
    assert page.find("p", "note").text() == "No photos found."


# Names that would be markup


def test_hostile_file_names_and_labels_appear_only_as_text(tmp_path: Path):
    script = save_photo("chelsea", tmp_path / "<script>alert(1)<" / "script>.jpg")
    quotes = save_photo("coffee", tmp_path / """a "quoted" 'name' & <b>more</b>.jpg""")
    paths = [script, quotes]
    hostile = [str(path) for path in paths]

    for page in all_pages(paths, labels=[HOSTILE_LABEL, "a cat"]):
        assert "<script" not in page.source.lower()
        assert {element.tag for element in page.elements} <= SAFE_TAGS
        assert {name for element in page.elements for name in element.attrs} <= SAFE_ATTRIBUTES
        assert set(hostile) <= {p.text() for p in page.find_all(None, "path")}
    search = written(search_page, ranked(paths), query=HOSTILE_LABEL)
    assert [p.attrs["title"] for p in search.find_all("p", "path")] == hostile
    assert search.find("h1").text() == f"Search: “{HOSTILE_LABEL}”"


def test_a_file_name_that_is_not_utf8_is_shown_and_linked(tmp_path: Path):
    path = make_non_utf8_image(tmp_path)
    page = written(search_page, ranked([path]), query="purple")  # read back as strict UTF-8

    assert page.find("p", "path").text() == str(tmp_path / "latin1-\\xe9.jpg")
    assert page.find("img", "hit").parent.attrs["href"] == (
        "file://" + urllib.parse.quote(os.fsencode(path))  # the bytes on disk, %E9
    )


# Self-contained


def test_no_page_loads_anything_but_its_own_inlined_data(tmp_path: Path):
    paths = [save_photo("chelsea", tmp_path / "cat.jpg"), save_photo("rocket", tmp_path / "r.jpg")]
    for page in all_pages(paths, labels=["a cat", "a rocket"]):
        assert not re.search("https?://", page.source)
        assert not page.find_all("link") and not page.find_all("script")
        assert "@import" not in page.source and "url(" not in page.source
        for element in page.elements:
            for name in ("src", "href"):
                if name in element.attrs:
                    assert element.attrs[name].startswith(("data:image/jpeg;base64,", "file:///"))
        assert page.find("meta").attrs == {"charset": "utf-8"}  # the first thing in <head>
        assert page.find("style").text().strip()  # the stylesheet, inlined


# Classify


def test_the_classify_page_draws_each_label_as_a_bar_with_its_percentage(tmp_path: Path):
    cat = save_photo("chelsea", tmp_path / "cat.jpg")
    predictions = [Prediction("a cat", 0.8125, 0.31), Prediction(HOSTILE_LABEL, 0.1875, 0.2)]
    page = written(classify_page, [Classification(str(cat), predictions)])

    result = page.find("li", "result")
    assert result.find("img").parent.attrs["href"] == cat.as_uri()
    bars = result.find_all("li", "bar")
    assert [bar.find("span", "label").text() for bar in bars] == ["a cat", HOSTILE_LABEL]
    assert [bar.find("span", "value").text() for bar in bars] == ["81.2%", "18.8%"]
    widths = [bar.find("span", "fill").attrs["style"] for bar in bars]
    assert widths == ["width: 81.2%", "width: 18.8%"]


def test_the_classify_page_lists_unreadable_images_and_empty_folders(tmp_path: Path):
    cat = save_photo("chelsea", tmp_path / "cat.jpg")
    results = [
        Classification(str(cat), [Prediction("a cat", 1.0, 0.3)]),
        Classification(str(tmp_path / "bad.png"), error="truncated or corrupt image data"),
        Classification(str(tmp_path / "empty"), warning=NO_IMAGES),
    ]
    page = written(classify_page, results)

    assert len(page.find_all("li", "result")) == 1
    problems = [item.text() for item in page.find("ul", "problems").find_all("li")]
    assert problems == [f"{tmp_path / 'bad.png'}: truncated or corrupt image data"]
    notes = [item.text() for item in page.find("ul", "notes").find_all("li")]
    assert notes == [f"{tmp_path / 'empty'}: {NO_IMAGES}"]


# Eval


def test_the_eval_page_names_the_run_and_its_skipped_files(tmp_path: Path):
    page = written(eval_page, a_report(tmp_path))

    facts = page.find("dl", "facts").text()
    assert str(tmp_path) in facts and "ViT-B-32" in facts and "12 in 3 classes" in facts
    skipped = [item.text() for item in page.find("details", "skipped").find_all("li")]
    assert skipped == [f"{tmp_path / 'bad.jpg'}: not an image (unrecognised format)"]


def test_the_eval_page_scores_every_template_set_best_first(tmp_path: Path):
    page = written(eval_page, a_report(tmp_path))

    table = page.find("table", "scores")
    assert [cell.text() for cell in table.find_all("th")] == [
        "templates",
        "acc@1",
        "acc@2",  # the report's top_k
        "mean per-class recall",
    ]
    rows = [[cell.text() for cell in row.find_all("td")] for row in table.find_all("tr")[1:]]
    assert rows == [["openai", "75.0%", "91.7%", "75.0%"], ["simple", "50.0%", "83.3%", "50.0%"]]
    sections = page.find_all("details", "templates")
    assert [s.find("h2").text() for s in sections] == ["openai templates", "simple templates"]
    assert ["open" in section.attrs for section in sections] == [True, False]


def test_the_eval_page_has_a_row_per_class_worst_recall_first(tmp_path: Path):
    best = page_sections(written(eval_page, a_report(tmp_path)))[0]

    rows = [[cell.text() for cell in row.find_all("td")] for row in best.find_all("tr", "class")]
    assert rows == [
        ["dog", "4", "50.0%", "", "66.7%", "cat"],
        ["cat", "4", "75.0%", "", "60.0%", "dog"],
        ["car", "4", "100.0%", "", "100.0%", ""],
    ]


def test_the_confusion_matrix_prints_each_count_shaded_by_its_rows_share(tmp_path: Path):
    best = page_sections(written(eval_page, a_report(tmp_path)))[0]
    matrix = best.find("table", "confusion")

    headers = matrix.find_all("th", "column")
    assert [header.attrs["title"] for header in headers] == ["car", "cat", "dog"]
    cells = [[cell for cell in row.find_all("td", "cell")] for row in matrix.find_all("tr")[1:]]
    assert [[cell.text() for cell in row] for row in cells] == [
        ["4", "0", "0"],
        ["0", "3", "1"],
        ["0", "2", "2"],
    ]
    assert [cell.attrs["style"] for cell in cells[1]] == [
        "--share: 0.000",
        "--share: 0.750",
        "--share: 0.250",
    ]
    assert [cell.attrs["title"] for cell in cells[2]][1] == "dog → cat: 2"
    assert all("diagonal" in cells[i][i].classes for i in range(3))


def test_the_mistakes_gallery_shows_the_most_confident_first(tmp_path: Path):
    best = page_sections(written(eval_page, a_report(tmp_path)))[0]

    mistakes = best.find_all("li", "mistake")
    assert [m.find("span", "score").text() for m in mistakes] == ["90.0%", "60.0%", "40.0%"]
    assert [m.find("span", "predicted").text() for m in mistakes] == ["cat", "dog", "cat"]
    assert [m.find("span", "true").text() for m in mistakes] == ["dog", "cat", "dog"]
    assert all(decoded(m.find("img").attrs["src"]).format == "JPEG" for m in mistakes)


def test_the_mistakes_gallery_says_how_many_it_leaves_out(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(html, "MISTAKES_SHOWN", 2)
    best = page_sections(written(eval_page, a_report(tmp_path)))[0]

    assert len(best.find_all("li", "mistake")) == 2
    assert best.find("p", "note").text() == "and 1 more mistake, not shown"


def test_an_eval_run_that_scored_no_template_set_says_so(tmp_path: Path):
    page = written(eval_page, EvalReport(str(tmp_path), "ViT-B-32", ["cat", "dog"], 0))

    assert page.find_all("table") == []
    assert page.find("p", "note").text() == "No template set was scored."


# Writing the file


def test_the_page_is_written_whole_and_leaves_no_temporary_file(tmp_path: Path):
    photo = save_photo("chelsea", tmp_path / "photos" / "cat.jpg")
    out = tmp_path / "pages" / "search.html"
    out.parent.mkdir()

    search_page(ranked([photo]), out, query="a cat")
    search_page(ranked([photo]), out, query="a cat, again")

    assert os.listdir(out.parent) == ["search.html"]
    assert "a cat, again" in Page.of(out).find("h1").text()


def test_a_write_that_fails_leaves_the_old_page_as_it_was(tmp_path: Path, monkeypatch):
    out = tmp_path / "pages" / "search.html"
    out.parent.mkdir()
    out.write_text("the old page")

    def disk_full(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    expected = f"{out}: cannot write the page (No space left on device)"
    with pytest.raises(ClipcliError, match=re.escape(expected)):
        search_page(ranked([make_image(tmp_path / "red.png")]), out, query="red")

    assert out.read_text() == "the old page"
    assert os.listdir(out.parent) == ["search.html"]


def test_a_page_that_fails_to_render_leaves_the_old_page_as_it_was(tmp_path: Path, monkeypatch):
    out = tmp_path / "pages" / "search.html"
    out.parent.mkdir()
    out.write_text("the old page")

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr(html, "thumbnail_jpeg", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # a bug keeps its traceback
        search_page(ranked([make_image(tmp_path / "red.png")]), out, query="red")

    assert out.read_text() == "the old page"
    assert os.listdir(out.parent) == ["search.html"]


def test_a_page_for_a_folder_that_does_not_exist_is_an_error_for_the_user(tmp_path: Path):
    out = tmp_path / "no-such-folder" / "search.html"
    with pytest.raises(ClipcliError, match=re.escape(f"{out}: cannot write the page (No such")):
        search_page([], out, query="anything")


# Speed


def test_a_second_page_of_the_same_photos_decodes_none_of_them_again(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLI_CACHE", str(tmp_path / "cache"))  # no thumbnail cached yet
    photos = [make_image(tmp_path / f"{i}.png", (5 * i, 255 - 5 * i, 128)) for i in range(50)]
    drawn = []
    draw = thumbnails.draw_thumbnail

    def counted(path: Path, size: int = thumbnails.THUMBNAIL_SIZE) -> Image.Image:
        drawn.append(path)
        return draw(path, size)

    monkeypatch.setattr(thumbnails, "draw_thumbnail", counted)
    search_page(ranked(photos), tmp_path / "first.html", query="colours")
    assert len(drawn) == 50
    search_page(ranked(photos), tmp_path / "second.html", query="colours")
    assert len(drawn) == 50  # all from the thumbnail cache
    assert len(Page.of(tmp_path / "second.html").find_all("img", "hit")) == 50


def test_a_photo_shown_twice_on_a_page_is_read_once(tmp_path: Path, monkeypatch):
    read = []
    thumbnail_jpeg = html.thumbnail_jpeg

    def counted(path: Path, size: int = thumbnails.THUMBNAIL_SIZE) -> bytes:
        read.append(path)
        return thumbnail_jpeg(path, size)

    monkeypatch.setattr(html, "thumbnail_jpeg", counted)
    page = written(eval_page, a_report(tmp_path))  # both template sets mistake the same photos

    assert len(page.find_all("li", "mistake")) == 3 + 2
    assert sorted(map(str, read)) == sorted({str(p) for p in read})


# Helpers


def ranked(paths: list[Path]) -> list[SearchHit]:
    return [SearchHit(rank, str(path), 0.3) for rank, path in enumerate(paths, start=1)]


def big_photo(folder: Path) -> Path:
    """A photo larger than a thumbnail on both sides."""
    image = make_image(folder / "big.jpg", "teal", (1200, 900))
    assert max(Image.open(image).size) > 256
    return image


def decoded(uri: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :], validate=True)))
    image.load()
    return image


def written(render, *args, **kwargs) -> Page:
    """Render a page to a file in a fresh folder and parse it back."""
    folder = Path(os.environ["CLIPCLI_HOME"]).parent / "pages"
    folder.mkdir(exist_ok=True)
    out = folder / f"page-{len(os.listdir(folder))}.html"
    render(*args, out, **kwargs)
    return Page.of(out)


def all_pages(paths: list[Path], labels: list[str]) -> list[Page]:
    """The search, classify and eval pages of the same photos, labelled with `labels`."""
    first, second = labels
    predictions = [Prediction(first, 0.6, 0.3), Prediction(second, 0.4, 0.2)]
    results = [Classification(str(path), predictions) for path in paths]
    results.append(Classification(str(paths[0]) + ".gone", error=f"{first}: no such file"))
    mistakes = [Mistake(str(path), first, second, 0.7) for path in paths]
    per_class = [ClassScore(first, 2, 0.0, 0.0, second), ClassScore(second, 0, 0.0, 0.0, None)]
    score = TemplateScore(first, 0.0, 1.0, 2, 0.0, per_class, [[0, 2], [0, 0]], mistakes)
    skipped = [Skipped(str(path), first) for path in paths]
    report = EvalReport(str(paths[0].parent), second, [first, second], 2, skipped, [score])
    return [
        written(search_page, ranked(paths), query=first, images=[paths[0]]),
        written(classify_page, results),
        written(eval_page, report),
    ]


def a_report(folder: Path) -> EvalReport:
    """Twelve photos of three classes, scored with two template sets; openai is the better."""
    cat, dog, cat_too = (
        save_photo("chelsea", folder / "cat" / "1.jpg"),
        save_photo("astronaut", folder / "dog" / "1.jpg"),
        save_photo("coffee", folder / "dog" / "2.jpg"),
    )
    openai = TemplateScore(
        templates="openai",
        acc1=0.75,
        acc5=11 / 12,
        top_k=2,
        mean_per_class_recall=0.75,
        per_class=[
            ClassScore("car", 4, 1.0, 1.0, None),
            ClassScore("cat", 4, 0.75, 0.6, "dog"),
            ClassScore("dog", 4, 0.5, 2 / 3, "cat"),
        ],
        confusion=[[4, 0, 0], [0, 3, 1], [0, 2, 2]],
        mistakes=[  # not in order: the page puts the most confident first
            Mistake(str(cat), "cat", "dog", 0.6),
            Mistake(str(dog), "dog", "cat", 0.9),
            Mistake(str(cat_too), "dog", "cat", 0.4),
        ],
    )
    simple = TemplateScore(
        templates="simple",
        acc1=0.5,
        acc5=10 / 12,
        top_k=2,
        mean_per_class_recall=0.5,
        per_class=openai.per_class,
        confusion=[[4, 0, 0], [0, 2, 2], [0, 4, 0]],
        mistakes=openai.mistakes[:2],
    )
    skipped = [Skipped(str(folder / "bad.jpg"), "not an image (unrecognised format)")]
    return EvalReport(str(folder), "ViT-B-32", ["car", "cat", "dog"], 12, skipped, [simple, openai])


def page_sections(page: Page) -> list[Element]:
    return page.find_all("details", "templates")


# What an escaped page may hold: any other element came from a name that was not escaped.
SAFE_TAGS = {
    *("html", "head", "meta", "title", "style", "body", "header", "main", "footer"),
    *("h1", "h2", "h3", "p", "span", "strong", "a", "img", "div", "ol", "ul", "li"),
    *("dl", "dt", "dd", "details", "summary", "table", "thead", "tbody", "tr", "th", "td"),
}
SAFE_ATTRIBUTES = {
    *("lang", "charset", "name", "content", "http-equiv", "class", "title", "style", "open"),
    *("href", "src", "width", "height", "alt"),
}
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input"}


@dataclass
class Element:
    """A parsed element, enough of a DOM to ask the page what it shows."""

    tag: str
    attrs: dict[str, str]
    parent: Element | None = None
    children: list[Element | str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def text(self) -> str:
        parts = (c if isinstance(c, str) else c.text() for c in self.children)
        return " ".join("".join(parts).split())

    def descendants(self):
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.descendants()

    def find_all(self, tag: str | None, cls: str | None = None) -> list[Element]:
        return [
            e
            for e in self.descendants()
            if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)
        ]

    def find(self, tag: str | None, cls: str | None = None) -> Element:
        found = self.find_all(tag, cls)
        assert found, f"no <{tag} class={cls}>"
        return found[0]


class Page(Element, HTMLParser):
    """A page file parsed back (as strict UTF-8): its elements, and its source text."""

    def __init__(self, source: str) -> None:
        Element.__init__(self, "#document", {})
        HTMLParser.__init__(self, convert_charrefs=True)
        self.source = source
        self.elements: list[Element] = []
        self._open: Element = self
        self.feed(source)
        self.close()

    @classmethod
    def of(cls, path: Path) -> Page:
        return cls(path.read_bytes().decode("utf-8"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, self._open)
        self._open.children.append(element)
        self.elements.append(element)
        if tag not in VOID_TAGS:
            self._open = element

    def handle_endtag(self, tag: str) -> None:
        while self._open.parent is not None and self._open.tag != tag:
            self._open = self._open.parent  # an unclosed element ends with its parent
        if self._open.parent is not None:
            self._open = self._open.parent

    def handle_data(self, data: str) -> None:
        self._open.children.append(data)
