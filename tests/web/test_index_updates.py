"""An index updated while the server runs: the next request finds what `clipcli index` added
and misses what it removed, without a restart; the server writes nothing in the index folder,
whose one writer the index run is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from served_index import drawn_png, index_photos, local_client, shapes_index

from clipcli.store import vector_index
from clipcli.store.catalog import Catalog
from clipcli.store.catalog_records import NewImage
from clipcli.web.app import create_app


@pytest.fixture
def index(tmp_path: Path) -> Path:
    return shapes_index(tmp_path, 12)


def found(client, query: str = "a red star") -> list[str]:
    response = client.get("/api/search", params={"q": query, "top_k": 200})
    assert response.status_code == 200, response.text
    return [hit["path"] for hit in response.json()]


def test_a_photo_indexed_while_serving_is_found_without_a_restart(index):
    photos = index.parent / "photos"
    new = photos / "new-red-star.png"
    with local_client(create_app(index)) as client:
        before, info_before = found(client), client.get("/api/info").json()
        new.write_bytes(drawn_png("star", "red", seed=5))
        index_photos(photos, index)

        after, info_after = found(client), client.get("/api/info").json()

    assert str(new) not in before and str(new) in after[:3]
    assert sorted(after) == sorted([*before, str(new)])
    assert info_after["photos"] == info_before["photos"] + 1 == 13
    assert info_after["generation"] > info_before["generation"]


def test_a_photo_removed_from_the_index_while_serving_is_no_longer_found(index):
    photos = index.parent / "photos"
    with local_client(create_app(index)) as client:
        gone = found(client)[0]
        Path(gone).rename(index.parent / "kept-aside.png")
        index_photos(photos, index)

        after = found(client)

    assert gone not in after and len(after) == 11


def test_vectors_committed_before_the_index_file_is_saved_are_found_in_memory(index):
    """An index run commits its batches first and saves the FAISS file at the end: a request
    between the two catches up from the catalog, and leaves the file to the run."""
    copy = index.parent / "photos" / "copy-of-a-photo.png"
    with local_client(create_app(index)) as client:
        original = client.get("/api/search", params={"q": "a shape", "top_k": 1}).json()[0]
        shutil.copy(original["path"], copy)
        saved = (index / vector_index.INDEX_FILE).read_bytes()
        with Catalog(index) as catalog:  # what an index run commits before it saves the index
            vector = catalog.vectors_for([original["id"]])[original["id"]]
            catalog.add([NewImage(str(copy), copy.stat().st_size, 0, "0" * 64, vector)])

        after = found(client, "a shape")

    assert str(copy) in after and len(after) == 13
    assert (index / vector_index.INDEX_FILE).read_bytes() == saved
