"""The page of `clipcli serve` in a real browser: headless Chromium, driven through the
DevTools protocol, types, clicks and drops files on the page as a person would, over the real
server and a real index of drawn shapes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chromium_page import Page, chromium_page
from views.headless_browser import find_chromium

from clipcli.shapes import write_sample_folder

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        find_chromium() is None,
        reason="no Chromium on PATH (`make test-browser` installs Debian's chromium)",
    ),
]

PHOTOS = 96  # each of the 48 colour-shape pairs twice
# Markup in a file name: a page that parsed names as HTML would grow a <b> and an <img> that
# runs a script. ("</b>" cannot be: no file name holds a "/".)
HOSTILE_STEM = "<b>bold<b><img src=x onerror=alert(1)>"
SERVER_START_TIMEOUT_S = 20

# The state of the page, read in it.
HITS = "[...document.querySelectorAll('#results .hit')]"
LOADED_THUMBS = (
    f"{HITS}.filter(h => {{ const i = h.querySelector('img.thumb');"
    " return i && i.complete && i.naturalWidth > 0; }).length"
)
SHOWN = (
    f"{HITS}.map(h => ({{id: Number(h.dataset.id), path: h.dataset.path, title: h.title,"
    " caption: h.querySelector('.caption').textContent, alt: h.querySelector('img').alt,"
    " score: Number(h.querySelector('.score').textContent)}))"
)
STATUS = "document.getElementById('status')"


@dataclass(frozen=True)
class Library:
    """The photos indexed, and where the server over them listens."""

    photos: list[Path]
    hostile: Path
    url: str

    def get(self, path: str) -> Any:
        """The JSON the server answers at `path`, whatever its status."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:
            return json.load(error)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port, in a thread of this process.

    The socket is bound here and handed to uvicorn, so that no other process can take the
    port between choosing it and listening on it."""
    import uvicorn

    # Named TCP, so that asyncio sets TCP_NODELAY on its connections as uvicorn's own would.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not server.started:
            assert thread.is_alive(), "the server stopped while starting"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """The photos, drawn once for all the tests (none changes them), and the one among them
    whose name holds markup."""
    folder = tmp_path_factory.mktemp("photos")
    photos = [path for path, _ in write_sample_folder(folder, PHOTOS, seed=7)]
    # A copy of a red cross: a search for red crosses finds it among the first.
    cross = next(path for path in photos if path.stem.endswith("-red-cross"))
    hostile = Path(shutil.copy(cross, folder / f"{HOSTILE_STEM}{cross.suffix}"))
    return [*photos, hostile], hostile


@pytest.fixture
def library(drawn: tuple[list[Path], Path], tmp_path: Path, cli) -> Iterator[Library]:
    from clipcli.web.app import create_app

    photos, hostile = drawn
    index = tmp_path / "index"
    result = cli("index", hostile.parent, "--index", index, "--model", "clipcli-shapes")
    assert result.exit_code == 0, result.stderr
    with serving(create_app(index)) as url:
        yield Library(photos, hostile, url)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    chromium = find_chromium()
    assert chromium is not None
    with chromium_page(chromium, tmp_path / "chromium", width=1280, height=900) as page:
        yield page


def wait_for_hits(page: Page, at_least: int = 1) -> list[dict[str, Any]]:
    """The tiles shown once the search is answered and `at_least` thumbnails have loaded."""
    page.wait_for(f"{STATUS}.dataset.state === 'done'", what="the search's answer")
    page.wait_for(f"{LOADED_THUMBS} >= {at_least}", what=f"{at_least} loaded thumbnails")
    return page.evaluate(SHOWN)


def save_screenshot(page: Page, png: Path) -> None:
    """Save the window once every thumbnail in it has loaded, to `png` and, when the
    environment names one, to $CLIPCLI_SCREENSHOT too (the docs' picture of the page)."""
    page.wait_for(
        f"{HITS}.every(h => {{ const r = h.getBoundingClientRect(), i = h.querySelector('img');"
        " return r.top > innerHeight || (i.complete && i.naturalWidth > 0); })",
        what="the thumbnails in the window",
    )
    wanted = [png]
    if os.environ.get("CLIPCLI_SCREENSHOT"):
        wanted.append(Path(os.environ["CLIPCLI_SCREENSHOT"]))
    page.screenshot(*wanted)
    assert png.stat().st_size > 10_000  # a page of photos, not a blank window


def test_typing_finds_photos_and_more_like_this_and_the_lightbox_show_them(
    library: Library, page: Page, tmp_path: Path
):
    page.navigate(library.url + "/")
    info = page.wait_for(
        "(() => { const t = document.getElementById('info').textContent;"
        " return t.includes('photos') && t; })()"
    )
    assert info == f"{PHOTOS + 1} photos · clipcli-shapes"

    page.click("#q")
    page.type_text("a red star")
    hits = wait_for_hits(page, at_least=5)

    assert len(hits) >= 5
    assert "red-star" in Path(hits[0]["path"]).name
    assert page.evaluate("location.search") == "?q=a+red+star"
    assert (
        page.evaluate(f"{STATUS}.textContent")
        == f"{len(hits)} photos for “a red star”, best first."
    )
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    first = hits[0]
    assert first["alt"] == Path(first["path"]).name
    assert first["title"] == f"{first['path']}\nscore {first['score']:.3f}"
    assert first["caption"] == f"{first['score']:.3f}{Path(first['path']).name}{first['path']}"

    page.hover(".hit img.thumb")  # the first tile's caption shows on the screenshot
    save_screenshot(page, tmp_path / "serve.png")

    page.click(".hit .similar")
    page.wait_for(f"location.search === '?similar={first['id']}'", what="the URL of the similar")
    page.wait_for(f"{HITS}.every(h => h.dataset.id !== '{first['id']}')", what="new results")
    similar = wait_for_hits(page, at_least=5)
    assert [hit["id"] for hit in similar] != [hit["id"] for hit in hits]
    assert page.evaluate("document.getElementById('q').value") == ""
    name = Path(first["path"]).name
    assert (
        page.evaluate(f"{STATUS}.textContent") == f"{len(similar)} photos like {name}, best first."
    )
    # The other red star is the photo most like a red star.
    assert "red-star" in Path(similar[0]["path"]).name

    page.evaluate("history.back()")  # back to the text search, which runs again
    page.wait_for("location.search === '?q=a+red+star'")
    assert page.evaluate("document.getElementById('q').value") == "a red star"
    assert wait_for_hits(page, at_least=5)[0]["path"] == first["path"]

    page.click(".hit:nth-child(2) img.thumb")
    lightbox = page.wait_for(
        "(() => { const box = document.getElementById('lightbox'),"
        " image = box.querySelector('img');"
        " return !box.hidden && image.complete && image.naturalWidth > 0"
        " && {src: image.getAttribute('src'), text: box.textContent}; })()",
        what="the lightbox's image",
    )
    assert lightbox["src"] == f"/image/{hits[1]['id']}"
    assert hits[1]["path"] in lightbox["text"]
    assert f"score {hits[1]['score']:.3f}" in lightbox["text"]
    page.press("Escape", 27)
    assert page.evaluate("document.getElementById('lightbox').hidden") is True
    page.click(".hit:nth-child(3) img.thumb")
    assert page.evaluate("document.getElementById('lightbox').hidden") is False
    page.click("#lightbox figure")
    assert page.evaluate("document.getElementById('lightbox').hidden") is True

    assert page.errors() == []


def test_a_bookmarked_url_searches_at_once_and_the_score_floor_narrows_it(
    library: Library, page: Page
):
    page.navigate(library.url + "/?q=a+red+star&min_score=0.3")

    hits = wait_for_hits(page)
    assert page.evaluate("document.getElementById('q').value") == "a red star"
    assert page.evaluate("document.getElementById('min-score').value") == "0.3"
    assert page.evaluate("document.getElementById('min-score-value').textContent") == "0.30"
    assert all(hit["score"] >= 0.3 for hit in hits)
    everything = library.get("/api/search?q=a+red+star&top_k=200&min_score=0")
    assert len(hits) == sum(hit["score"] >= 0.3 for hit in everything)

    page.click("#min-score")
    page.press("End", 35)  # the slider's top: a floor no photo reaches
    page.wait_for(f"{STATUS}.dataset.state === 'empty'", what="no results")
    assert page.evaluate(f"{HITS}.length") == 0
    assert page.evaluate(f"{STATUS}.textContent") == (
        "No photos match “a red star”. Lower the score floor to see weaker matches."
    )
    assert page.evaluate("location.search") == "?q=a+red+star&min_score=1.00"

    page.press("Home", 36)
    assert len(wait_for_hits(page)) > len(hits)
    assert page.evaluate("location.search") == "?q=a+red+star"

    assert page.errors() == []


def test_a_chosen_or_dropped_image_finds_itself_first(library: Library, page: Page):
    star = next(path for path in library.photos if path.stem.endswith("-red-star"))
    ring = next(path for path in library.photos if path.stem.endswith("-blue-ring"))
    page.navigate(library.url + "/?q=a+green+square")
    wait_for_hits(page)

    page.set_files("#file", star)
    page.wait_for(f"{STATUS}.textContent.includes('like {star.name}')", what="the image search")
    hits = wait_for_hits(page)
    assert hits[0]["path"] == str(star)
    assert hits[0]["score"] == pytest.approx(1, abs=1e-3)
    assert page.evaluate("location.search") == ""
    assert page.evaluate("document.getElementById('q').value") == ""

    # A file dropped from the desktop: the drop event carries it, as a browser's would.
    ring_id = next(
        hit["id"]
        for hit in library.get("/api/search?q=a+blue+ring&top_k=200")
        if hit["path"] == str(ring)
    )
    page.evaluate(
        f"fetch('/image/{ring_id}').then(answer => answer.blob()).then(blob => {{"
        " const carried = new DataTransfer();"
        f" carried.items.add(new File([blob], {json.dumps(ring.name)}, {{type: blob.type}}));"
        " for (const kind of ['dragenter', 'dragover', 'drop'])"
        "   document.body.dispatchEvent(new DragEvent(kind,"
        "     {dataTransfer: carried, bubbles: true, cancelable: true}));"
        " })"
    )
    page.wait_for(f"{STATUS}.textContent.includes('like {ring.name}')", what="the drop's search")
    hits = wait_for_hits(page)
    assert hits[0]["path"] == str(ring)
    assert page.evaluate("document.getElementById('drop-zone').hidden") is True

    assert page.errors() == []


def test_a_file_name_with_markup_is_shown_as_text(library: Library, page: Page):
    page.navigate(library.url + "/?q=a+red+cross")
    hits = wait_for_hits(page)

    shown = [hit for hit in hits if hit["path"] == str(library.hostile)]
    assert shown, [hit["path"] for hit in hits]
    name = library.hostile.name
    assert shown[0]["alt"] == name
    assert shown[0]["caption"].endswith(name)
    assert name in shown[0]["title"]
    page.click(f".hit[data-id='{shown[0]['id']}'] img.thumb")
    page.wait_for("!document.getElementById('lightbox').hidden")
    assert page.evaluate("document.getElementById('lightbox-path').textContent") == str(
        library.hostile
    )
    # Only the page's own elements: no <b>, and no <img> but the thumbnails and the lightbox's.
    assert page.evaluate("document.querySelectorAll('b').length") == 0
    assert page.evaluate(
        "[...document.querySelectorAll('img')].every(i => i.matches('img.thumb, #lightbox-image'))"
    )
    assert page.evaluate("document.body.textContent.includes('<b>bold<b>')")
    assert page.errors() == []


def test_an_error_of_the_server_is_shown_in_the_status_line(library: Library, page: Page):
    missing = 1 + max(hit["id"] for hit in library.get("/api/search?q=a+shape&top_k=200"))
    answer = library.get(f"/api/similar/{missing}")
    assert isinstance(answer, dict) and answer["error"]

    page.navigate(library.url + f"/?similar={missing}")

    page.wait_for(f"{STATUS}.dataset.state === 'error'", what="the error")
    assert page.evaluate(f"{STATUS}.textContent") == answer["error"]
    assert page.evaluate(f"{HITS}.length") == 0
