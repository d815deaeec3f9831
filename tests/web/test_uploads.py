"""Searching by an uploaded image: as a form's `image` field or as the whole body, embedded
with the index's model from a private temporary file; too many bytes or pixels refused before
any pixel is decoded."""

from __future__ import annotations

from pathlib import Path

import pytest
from served_index import drawn_png, is_red_star, local_client, names, png_claiming, shapes_index

from clipcli.web import uploads
from clipcli.web.app import create_app
from clipcli.web.warm_search import WarmSearch


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    root = tmp_path_factory.mktemp("uploads")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPCLI_HOME", str(root / "home"))
        env.setenv("CLIPCLI_CACHE", str(shared_cache))
        return shapes_index(root, 96)


@pytest.fixture
def client(index: Path):
    with local_client(create_app(index)) as client:
        yield client


@pytest.fixture
def no_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the image encoder fails the test: a refusal must come before it."""

    def refuse(self: WarmSearch) -> None:
        raise AssertionError("the image encoder was loaded")

    monkeypatch.setattr(WarmSearch, "image_encoder", refuse)


def upload(client, data: bytes, as_form: bool = True, **extra):
    if as_form:
        files = {"image": ("my photo.png", data, "image/png")}
        return client.post("/api/search/image", files=files, params=extra)
    return client.post("/api/search/image", content=data, params=extra)


@pytest.mark.parametrize("as_form", [True, False], ids=["form", "body"])
def test_an_uploaded_red_star_finds_the_red_stars_first(client, as_form):
    response = upload(client, drawn_png("star", "red"), as_form, top_k=5)

    assert response.status_code == 200, response.text
    hits = response.json()
    assert [set(hit) for hit in hits] == [{"rank", "path", "score", "id"}] * 5
    assert [is_red_star(name) for name in names(hits)[:2]] == [True, True]


def test_an_upload_takes_the_score_floor_and_the_filters(client):
    hits = upload(client, drawn_png("ring", "blue"), top_k=96, ext="png", min_score=0.5).json()

    assert hits and all(hit["score"] >= 0.5 for hit in hits)
    assert all(name.endswith(".png") for name in names(hits))


def test_an_upload_is_embedded_from_a_file_of_a_private_folder_gone_afterwards(client, monkeypatch):
    seen: list[Path] = []
    real = uploads.image_vectors

    def recording(encoder, paths):
        seen.extend(paths)
        assert oct(paths[0].parent.stat().st_mode & 0o777) == "0o700"
        return real(encoder, paths)

    monkeypatch.setattr(uploads, "image_vectors", recording)
    files = {"image": ("../../../evil name.png", drawn_png("star", "red"), "image/png")}

    response = client.post("/api/search/image", files=files)

    assert response.status_code == 200
    assert [path.name for path in seen] == ["upload"]
    assert not seen[0].parent.exists()


def test_a_decompression_bomb_is_refused_before_anything_is_decoded(client, no_encoder):
    response = upload(client, png_claiming(20_000, 20_000))  # 400 MP, in 67 bytes

    assert response.status_code == 413
    assert response.json() == {"error": "the image is over 40 megapixels"}


def test_an_image_over_40_megapixels_is_refused(client, no_encoder):
    response = upload(client, png_claiming(8_000, 6_000), as_form=False)

    assert response.status_code == 413
    assert response.json()["error"] == "the image is over 40 megapixels (8000x6000)"


def test_an_upload_over_20_mb_is_refused(client, no_encoder):
    too_big = b"\0" * (uploads.MAX_UPLOAD_BYTES + 1)

    as_body = upload(client, too_big, as_form=False)
    as_form = upload(client, too_big)

    assert (as_body.status_code, as_form.status_code) == (413, 413)
    assert as_body.json() == {"error": "the upload is over 20 MB"}


def test_an_upload_over_20_mb_without_a_length_is_refused_as_it_comes(client, no_encoder):
    def chunks():
        for _ in range(64):  # 64 MB, with no Content-Length to tell
            yield b"\0" * 2**20

    response = client.post("/api/search/image", content=chunks())

    assert response.status_code == 413
    assert response.json() == {"error": "the upload is over 20 MB"}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "the upload is empty"),
        (b"hello, not an image", "not an image clipcli can read"),
        (png_claiming(64, 64), "not an image clipcli can read (truncated or corrupt"),
    ],
    ids=["empty", "text", "no pixels"],
)
def test_an_upload_that_is_no_image_is_a_400(client, data, says):
    response = upload(client, data, as_form=False)

    assert response.status_code == 400
    assert says in response.json()["error"]


def test_a_form_without_an_image_field_is_a_400(client):
    response = client.post("/api/search/image", files={"photo": ("a.png", b"x", "image/png")})

    assert response.status_code == 400
    assert response.json()["error"] == "no image in the form; send it as the field 'image'"
