"""`clipcli serve`'s API over an index of drawn shapes: searches by text and by an indexed
photo in the shape of `clipcli search --json` (with the catalog id), the index's summary,
thumbnails and files by id only, and errors as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from served_index import (
    decoded,
    get_raw_path,
    is_red_star,
    local_client,
    names,
    shapes_index,
)

from clipcli.store.catalog import Catalog
from clipcli.web import params
from clipcli.web.app import create_app

HIT_KEYS = {"rank", "path", "score", "id"}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """96 drawn shapes, two of each colour and shape, indexed with the bundled shapes model."""
    root = tmp_path_factory.mktemp("served")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPCLI_HOME", str(root / "home"))
        env.setenv("CLIPCLI_CACHE", str(shared_cache))
        return shapes_index(root, 96)


@pytest.fixture(scope="module")
def client(index: Path, shared_cache: Path):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPCLI_CACHE", str(shared_cache))
        app = create_app(index)
    with local_client(app) as client:
        yield client


def search(client, query: str, **extra) -> list[dict]:
    response = client.get("/api/search", params={"q": query, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def red_star_id(client) -> int:
    return search(client, "a red star", top_k=1)[0]["id"]


def test_a_text_search_ranks_the_red_stars_first(client):
    hits = search(client, "a red star", top_k=5)

    assert [set(hit) for hit in hits] == [HIT_KEYS] * 5
    assert [hit["rank"] for hit in hits] == [1, 2, 3, 4, 5]
    assert [is_red_star(name) for name in names(hits)[:2]] == [True, True]
    assert not any(is_red_star(name) for name in names(hits)[2:])


def test_the_hits_are_those_of_clipcli_search_with_their_catalog_ids(client, cli, index):
    hits = search(client, "a green ring", top_k=10)
    _, expected = cli.json("search", "a green ring", "--index", index, "--top-k", "10")

    assert [(h["rank"], h["path"]) for h in hits] == [(h["rank"], h["path"]) for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in expected], abs=1e-5)
    with Catalog(index, read_only=True) as catalog:
        assert catalog.paths_for([h["id"] for h in hits]) == {h["id"]: h["path"] for h in hits}


def test_terms_are_added_and_subtracted_unless_literal(client):
    by_arithmetic = search(client, "a red star - red + blue", top_k=2)
    literally = search(client, "a red star - red + blue", top_k=2, literal="1")

    assert [Path(name).stem[5:] for name in names(by_arithmetic)] == ["blue-star", "blue-star"]
    assert names(literally) != names(by_arithmetic)


@pytest.mark.parametrize("query", ["", "   "])
def test_an_empty_query_finds_nothing(client, query):
    assert search(client, query) == []


def test_top_k_is_24_unless_asked_and_at_most_the_cap(client, monkeypatch):
    assert len(search(client, "a star")) == params.DEFAULT_TOP_K == 24
    assert len(search(client, "a star", top_k=3)) == 3
    monkeypatch.setattr(params, "MAX_TOP_K", 10)
    assert len(search(client, "a star", top_k=50)) == 10


def test_min_score_leaves_out_the_photos_that_score_less(client):
    everything = search(client, "a red star", top_k=96)
    floor = everything[10]["score"]

    kept = search(client, "a red star", top_k=96, min_score=floor)

    assert kept == [hit for hit in everything if hit["score"] >= floor]
    assert 11 <= len(kept) < 96


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("top_k", "many", "top_k=many: not a whole number"),
        ("top_k", "2.5", "top_k=2.5: not a whole number"),
        ("top_k", "0", "top_k must be at least 1"),
        ("top_k", "-4", "top_k must be at least 1"),
        ("min_score", "high", "min_score=high: not a number"),
        ("min_score", "nan", "min_score=nan: not a finite number"),
        ("literal", "maybe", "literal=maybe: not a yes or no"),
        ("since", "yesterday", "yesterday: not a date"),
        ("ext", ",", "no file type"),
    ],
)
def test_a_value_that_cannot_be_read_is_a_400_naming_it(client, name, value, says):
    response = client.get("/api/search", params={"q": "a star", name: value})

    assert response.status_code == 400
    assert says in response.json()["error"]


@pytest.mark.parametrize(
    ("query", "says"),
    [("a star + - red", "a '+' with no term after it"), ("a star - a star", "cancel each other")],
)
def test_a_query_clipcli_search_refuses_is_a_400(client, query, says):
    response = client.get("/api/search", params={"q": query})

    assert response.status_code == 400
    assert says in response.json()["error"]


def test_filters_keep_the_photos_clipcli_search_would(client, index):
    photos = index.parent / "photos"

    pngs = search(client, "a star", top_k=96, ext="png")
    below = search(client, "a star", top_k=96, under=str(photos))
    elsewhere = search(client, "a star", under=str(index.parent / "elsewhere"))

    assert pngs and all(name.endswith(".png") for name in names(pngs))
    assert len(pngs) == len(list(photos.glob("*.png")))
    assert len(below) == 96 and elsewhere == []


def test_similar_finds_the_other_red_star_and_leaves_the_photo_itself_out(client):
    star = red_star_id(client)

    hits = client.get(f"/api/similar/{star}", params={"top_k": 95}).json()

    assert star not in [hit["id"] for hit in hits]
    assert len(hits) == 95 and [hit["rank"] for hit in hits] == list(range(1, 96))
    assert is_red_star(names(hits)[0])


@pytest.mark.parametrize("photo", ["999999", "0", "-1", "abc", "1.5", "9" * 30])
def test_similar_to_no_photo_is_a_404(client, photo):
    response = client.get(f"/api/similar/{photo}")

    assert response.status_code == 404
    assert "no photo" in response.json()["error"]


def test_info_names_the_index_its_model_photos_and_generation(client, index):
    with Catalog(index, read_only=True) as catalog:
        generation = catalog.generation

    info = client.get("/api/info").json()

    assert info == {
        "index": str(index),
        "model": "clipcli-shapes",
        "photos": 96,
        "generation": generation,
    }


def test_a_thumbnail_is_a_small_jpeg_of_the_photo(client):
    response = client.get(f"/thumb/{red_star_id(client)}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    thumbnail = decoded(response.content)
    assert thumbnail.format == "JPEG" and max(thumbnail.size) <= 256


@pytest.mark.parametrize(("suffix", "media_type"), [(".png", "image/png"), (".jpg", "image/jpeg")])
def test_an_image_is_the_file_itself_with_its_content_type(client, suffix, media_type):
    hit = next(h for h in search(client, "a shape", top_k=96) if h["path"].endswith(suffix))

    response = client.get(f"/image/{hit['id']}")

    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == Path(hit["path"]).read_bytes()


@pytest.mark.parametrize("route", ["image", "thumb"])
@pytest.mark.parametrize("photo", ["0", "-1", "abc", "1.5", "1e3", "999999", "9" * 30, "%20"])
def test_a_file_is_only_served_for_an_id_in_the_catalog(client, route, photo):
    response = client.get(f"/{route}/{photo}")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "error" in response.json()


@pytest.mark.parametrize(
    "path",
    [
        "/image/../../etc/passwd",
        "/image/..%2F..%2F..%2Fetc%2Fpasswd",
        "/image/%2e%2e%2fcatalog.sqlite3",
        "/thumb/%2e%2e%2f",
        "/thumb/..%5c..%5cetc%5cpasswd",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static//etc/passwd",
    ],
)
def test_a_path_in_the_request_reaches_no_file(client, path):
    response = get_raw_path(client.app, path)

    assert response.status == 404
    assert set(json.loads(response.body)) == {"error"}
    assert b"root:" not in response.body and b"import" not in response.body


def test_an_unknown_route_or_method_is_a_json_error(client):
    missing = client.get("/api/nothing")
    wrong_method = client.delete("/api/search")

    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_a_file_name_that_is_not_utf8_comes_back_escaped_as_in_clipcli_search(tmp_path, cli):
    from conftest import make_non_utf8_image

    photo = make_non_utf8_image(tmp_path / "photos")
    result = cli(
        "index", tmp_path / "photos", "--index", tmp_path / "index", "--model", "clipcli-shapes"
    )
    assert result.exit_code == 0, result.stderr

    with local_client(create_app(tmp_path / "index")) as client:
        response = client.get("/api/search", params={"q": "a photo"})

    assert response.status_code == 200
    assert json.loads(response.content)[0]["path"] == str(photo.parent / "latin1-\\xe9.jpg")


def test_searches_write_nothing_in_the_index_folder(client, index):
    from conftest import snapshot

    before = snapshot(index)
    search(client, "a blue circle")
    client.get(f"/api/similar/{red_star_id(client)}")
    client.get("/api/info")

    assert snapshot(index) == before


def test_the_text_tower_is_opened_once_for_every_query_the_server_answers(index, monkeypatch):
    from clipcli.encoders import text_tower

    opened = []
    real = text_tower.fast_text_encoder

    def opening(spec, **options):
        opened.append(spec)
        return real(spec, **options)

    monkeypatch.setattr(text_tower, "fast_text_encoder", opening)

    with local_client(create_app(index)) as client:
        for query in ("a red star", "a blue ring", "a green cross + a white square"):
            search(client, query)

    assert len(opened) == 1


def test_an_indexed_photo_whose_file_is_gone_is_a_404(tmp_path):
    index = shapes_index(tmp_path, 6)
    with local_client(create_app(index)) as client:
        hit = search(client, "a shape", top_k=1)[0]
        Path(hit["path"]).unlink()

        image, thumb = client.get(f"/image/{hit['id']}"), client.get(f"/thumb/{hit['id']}")
        after = search(client, "a shape", top_k=6)

    assert (image.status_code, thumb.status_code) == (404, 404)
    assert "no longer an image file" in image.json()["error"]
    assert hit["path"] not in [h["path"] for h in after]


def test_a_photo_become_a_link_is_served_only_while_it_links_to_an_image_file(tmp_path):
    index = shapes_index(tmp_path, 6)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")
    elsewhere = tmp_path / "elsewhere" / "photo.png"
    elsewhere.parent.mkdir()
    Image.new("RGB", (8, 8), "red").save(elsewhere)
    with local_client(create_app(index)) as client:
        hit = search(client, "a shape", top_k=1)[0]
        photo = Path(hit["path"])

        def served_through_link(target: Path) -> int:
            photo.unlink()
            photo.symlink_to(target)
            response = client.get(f"/image/{hit['id']}")
            assert b"not for the page" not in response.content
            return response.status_code

        statuses = {
            "an image file elsewhere": served_through_link(elsewhere),
            "a text file": served_through_link(secret),
            "a folder": served_through_link(tmp_path / "elsewhere"),
            "nothing": served_through_link(tmp_path / "gone.png"),
            "/etc/passwd": served_through_link(Path("/etc/passwd")),
        }

    assert statuses == {
        "an image file elsewhere": 200,
        "a text file": 404,
        "a folder": 404,
        "nothing": 404,
        "/etc/passwd": 404,
    }


def test_an_on_disk_index_is_served_as_clipcli_search_answers_it(tmp_path, cli, shared_cache):
    from conftest import snapshot

    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPCLI_HOME", str(tmp_path / "home"))
        env.setenv("CLIPCLI_CACHE", str(shared_cache))
        index = shapes_index(tmp_path, 48)
        result = cli("index", "--index", index, "--layout", "ivfpq")
        assert result.exit_code == 0, result.stderr
        _, expected = cli.json("search", "a red star", "--index", index, "--top-k", "6")
        before = snapshot(index)
        with local_client(create_app(index)) as client:
            hits = search(client, "a red star", top_k=6)
            similar = client.get(f"/api/similar/{hits[0]['id']}")
            info = client.get("/api/info").json()
    assert list(index.glob("*.ivfdata"))  # the layout it is served in
    assert [(h["rank"], h["path"]) for h in hits] == [(h["rank"], h["path"]) for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in expected], abs=1e-5)
    assert similar.status_code == 200 and hits[0]["id"] not in [h["id"] for h in similar.json()]
    assert info["photos"] == 48
    assert snapshot(index) == before  # served memory-mapped, nothing written beside it
