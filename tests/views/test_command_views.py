"""The views as the commands write them: `--html` on search, classify and eval, `--contact-sheet`
on search and classify, `--confusion` on eval, and `search --preview` where no image shows."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import TEST_MODEL, make_image
from PIL import Image

from clipcli.shapes import write_labelled_folder
from clipcli.views.contact_sheet import sheet_size

SHAPES = ["--model", TEST_MODEL]


class Images(HTMLParser):
    """The classes of every <img> on a page, and whether it holds a script."""

    def __init__(self) -> None:
        super().__init__()
        self.classes: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.classes.append(dict(attrs).get("class") or "")
        self.scripts += tag == "script"


def page_images(path: Path) -> Images:
    parser = Images()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("views") / "shapes"
    write_labelled_folder(root, 4, seed=2)
    return root


@pytest.fixture
def indexed(cli, shapes_dataset, tmp_path) -> Path:
    index = tmp_path / "index"
    result = cli("index", shapes_dataset, "--index", index, *SHAPES, "--json")
    assert result.exit_code == 0, result.stderr
    return index


def test_search_html_holds_one_thumbnail_per_hit(cli, indexed, tmp_path):
    page = tmp_path / "hits.html"
    result = cli("search", "a star", "--index", indexed, "--top-k", "7", "--html", page)
    assert result.exit_code == 0, result.stderr
    images = page_images(page)
    assert images.classes.count("hit") == 7 and images.scripts == 0


def test_search_contact_sheet_is_a_png_of_the_grid_of_its_hits(cli, indexed, tmp_path):
    sheet = tmp_path / "hits.png"
    result = cli("search", "a ring", "--index", indexed, "--top-k", "6", "--contact-sheet", sheet)
    assert result.exit_code == 0, result.stderr
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.size == sheet_size(6)


def test_preview_where_no_image_shows_says_so_once_and_prints_the_usual_results(cli, indexed):
    plain = cli("search", "a star", "--index", indexed, "--top-k", "3")
    result = cli("search", "a star", "--index", indexed, "--top-k", "3", "--preview")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == plain.stdout
    assert result.stderr.count("\n") == 1 and "--preview" in result.stderr


def test_preview_does_not_go_with_output_for_scripts(cli, indexed):
    result = cli("search", "a star", "--index", indexed, "--preview", "--json")
    assert result.exit_code == 2 and "--preview" in result.stderr


def test_classify_html_and_contact_sheet_show_each_image(cli, shapes_dataset, tmp_path):
    files = sorted((shapes_dataset / "star").iterdir())[:3]
    page, sheet = tmp_path / "labels.html", tmp_path / "labels.png"
    result = cli(
        "classify", *files, *SHAPES, "--labels", "star,ring,cross", "--html", page,
        "--contact-sheet", sheet,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert len(page_images(page).classes) == 3
    text = page.read_text(encoding="utf-8")
    assert all(label in text for label in ("star", "ring", "cross"))
    with Image.open(sheet) as image:
        assert image.size == sheet_size(3)


def test_eval_writes_its_report_and_confusion_plot(cli, shapes_dataset, tmp_path):
    wrong = make_image(shapes_dataset.parent / "shaky" / "star" / "red.png", "red")
    make_image(shapes_dataset.parent / "shaky" / "ring" / "blue.png", "blue")
    page, plot = tmp_path / "report.html", tmp_path / "confusion.png"
    result = cli("eval", wrong.parent.parent, *SHAPES, "--html", page, "--confusion", plot)
    assert result.exit_code == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert "acc@" in text and "star" in text and "ring" in text
    with Image.open(plot) as image:
        assert image.format == "PNG" and min(image.size) > 100


@pytest.mark.parametrize(
    ("command", "option", "name"),
    [
        (["search", "a star"], "--html", "hits.txt"),
        (["search", "a star"], "--contact-sheet", "hits.jpg"),
        (["classify", "x.png", "--labels", "a,b"], "--html", "missing/page.html"),
    ],
)
def test_an_output_file_that_cannot_be_written_is_refused_before_any_work(
    cli, tmp_path, command, option, name
):
    result = cli(*command, option, tmp_path / name, *SHAPES[:0])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {option} {tmp_path / name}")


def test_search_html_shows_every_example_image_apart_from_the_hits(
    cli, indexed, shapes_dataset, tmp_path
):
    towards, away = sorted((shapes_dataset / "star").iterdir())[:2]
    page = tmp_path / "examples.html"
    result = cli(
        "search", "--image", towards, "--not-image", away, "--index", indexed, "--top-k", "4",
        "--html", page,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    images = page_images(page)
    assert images.classes.count("example") == 2 and images.classes.count("hit") == 4
    assert "and unlike this image" in page.read_text(encoding="utf-8")
