"""The on-disk layout as the catalog's cache: chosen by size, memory or the user; caught up
in place of a rebuild; rebuilt without training where the lists still fit; searched with
filters and re-ranked on the catalog's vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import snapshot
from test_ondisk_ivfpq import DIM, clustered

from clipcli.store import ondisk_ivfpq, vector_index
from clipcli.store.catalog import Catalog
from clipcli.store.catalog_records import NewImage


@pytest.fixture
def catalog(tmp_path):
    with Catalog(tmp_path) as opened:
        yield opened


def fill(catalog: Catalog, paths: range, seed: int) -> None:
    vectors = clustered(len(paths), seed=seed)
    catalog.add(
        NewImage(f"/photos/{i}.jpg", 1, 1, f"sha{i}-{seed}", v)
        for i, v in zip(paths, vectors, strict=True)
    )


def no_call(*args, **kwargs):
    raise AssertionError("called")


def test_auto_goes_on_disk_once_the_vectors_would_fill_a_quarter_of_the_memory(monkeypatch):
    monkeypatch.setenv(vector_index.RAM_VARIABLE, str(4 * 1000 * 512 * 4))
    assert vector_index.layout_for(1000, 512) == "flat"
    assert vector_index.layout_for(1001, 512) == "ivfpq"
    monkeypatch.setenv(vector_index.RAM_VARIABLE, str(2**40))
    assert vector_index.layout_for(300_000, 512) == "ivf"
    assert vector_index.layout_for(50, 512, "ivfpq") == "ivfpq"
    assert vector_index.layout_for(10**8, 512, "flat") == "flat"
    assert vector_index.layout_for(1, 512, "ivfpq") == "flat"  # nothing to train codes on
    monkeypatch.delenv(vector_index.RAM_VARIABLE)
    assert vector_index.ram_bytes() > 2**27


def test_the_asked_layout_is_built_on_disk_stamped_and_read_back_mapped(
    catalog, tmp_path, monkeypatch
):
    fill(catalog, range(500), seed=1)
    catalog.set_layout("ivfpq")
    index = vector_index.refresh(tmp_path, catalog)
    assert ondisk_ivfpq.on_disk_lists(index) is not None and index.ntotal == 500
    assert json.loads((tmp_path / vector_index.STAMP_FILE).read_text())["layout"] == "ivfpq"
    monkeypatch.setattr(ondisk_ivfpq, "build", no_call)
    again = vector_index.refresh(tmp_path, catalog)
    assert ondisk_ivfpq.on_disk_lists(again) is not None and again.ntotal == 500


def test_an_on_disk_index_catches_up_with_adds_replacements_and_removals(
    catalog, tmp_path, monkeypatch
):
    catalog.set_layout("ivfpq")
    fill(catalog, range(600), seed=1)
    vector_index.refresh(tmp_path, catalog)
    fill(catalog, range(590, 620), seed=2)  # 590-599 replaced, 600-619 new
    catalog.remove([catalog.entries()[f"/photos/{n}.jpg"].id for n in (3, 7)])
    monkeypatch.setattr(ondisk_ivfpq, "build", no_call)
    index = vector_index.refresh(tmp_path, catalog)
    assert sorted(vector_index.indexed_ids(index)) == sorted(catalog.ids())
    replaced = catalog.entries()["/photos/595.jpg"].id
    vector = catalog.vectors_for([replaced])[replaced]
    exact = vector_index.catalog_vectors(catalog, DIM)
    hits = vector_index.search(index, vector, 1, rerank=20, exact_vectors=exact)
    assert hits[0].id == replaced and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_outgrowing_the_lists_trains_anew_and_an_unreadable_index_rebuilds_without_training(
    catalog, tmp_path, monkeypatch
):
    catalog.set_layout("ivfpq")
    fill(catalog, range(100), seed=1)
    vector_index.refresh(tmp_path, catalog)
    small = ondisk_ivfpq.trained_shape(tmp_path / vector_index.INDEX_FILE)
    fill(catalog, range(100, 500), seed=2)
    vector_index.refresh(tmp_path, catalog)
    grown = ondisk_ivfpq.trained_shape(tmp_path / vector_index.INDEX_FILE)
    assert (small.lists, grown.lists) == (2, ondisk_ivfpq.lists_for(500))
    (tmp_path / vector_index.INDEX_FILE).write_bytes(b"not an index")
    monkeypatch.setattr(ondisk_ivfpq, "train", no_call)
    index = vector_index.refresh(tmp_path, catalog)
    assert sorted(vector_index.indexed_ids(index)) == sorted(catalog.ids())


def test_filters_fill_the_top_k_from_the_allowed_ids(catalog, tmp_path):
    catalog.set_layout("ivfpq")
    fill(catalog, range(2000), seed=1)
    index = vector_index.refresh(tmp_path, catalog)
    ids = np.sort(catalog.ids())
    for allowed in (ids[::400], ids[::3]):
        hits = vector_index.search(index, clustered(1, seed=5)[0], 5, allowed=allowed)
        assert len(hits) == 5 and {h.id for h in hits} <= set(allowed.tolist())
    assert vector_index.search(index, clustered(1)[0], 5, allowed=np.array([10**9])) == []


def test_reranking_scores_are_the_catalogs_cosines_and_flat_ignores_it(catalog, tmp_path):
    fill(catalog, range(800), seed=1)
    query = clustered(1, seed=6)[0]
    exact = vector_index.catalog_vectors(catalog, DIM)
    flat = vector_index.refresh(tmp_path, catalog)
    assert vector_index.search(flat, query, 5, rerank=50, exact_vectors=exact) == (
        vector_index.search(flat, query, 5)
    )
    catalog.set_layout("ivfpq")
    index = vector_index.refresh(tmp_path, catalog)
    hits = vector_index.search(index, query, 5, rerank=800, exact_vectors=exact)
    vectors = catalog.vectors_for([h.id for h in hits])
    for hit in hits:
        assert hit.score == pytest.approx(float(vectors[hit.id] @ query), abs=1e-6)
    assert [h.id for h in hits] == [h.id for h in vector_index.search(flat, query, 5)]


def test_leaving_the_on_disk_layout_removes_its_files(catalog, tmp_path):
    catalog.set_layout("ivfpq")
    fill(catalog, range(300), seed=1)
    vector_index.refresh(tmp_path, catalog)
    assert list(tmp_path.glob("*.ivfdata")) and (tmp_path / "vectors.trained.faiss").is_file()
    catalog.set_layout("auto")
    index = vector_index.refresh(tmp_path, catalog)
    assert vector_index._is_exact(index)
    assert not list(tmp_path.glob("*.ivfdata"))
    assert not (tmp_path / "vectors.trained.faiss").exists()


def test_a_reader_brings_an_on_disk_index_up_to_date_without_writing_the_folder(catalog, tmp_path):
    catalog.set_layout("ivfpq")
    fill(catalog, range(400), seed=1)
    vector_index.refresh(tmp_path, catalog)
    fill(catalog, range(400, 450), seed=2)
    before = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("catalog")}
    index = vector_index.refresh(tmp_path, catalog, save_to_folder=False)
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("catalog")}
    assert after == before
    assert sorted(vector_index.indexed_ids(index)) == sorted(catalog.ids())  # mapped still
