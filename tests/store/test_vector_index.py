"""The FAISS layer: exact below a size threshold, inverted lists above it, ids kept."""

from __future__ import annotations

import numpy as np
import pytest

from clipcli.store import vector_index


def clustered(count: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    points = centres[rng.integers(0, clusters, count)] + 0.3 * rng.normal(size=(count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_small_collections_get_an_exact_index_with_catalog_ids():
    vectors = clustered(50)
    ids = np.arange(1000, 1050, dtype=np.int64)
    index = vector_index.build(ids, vectors)
    hits = vector_index.search(index, vectors[7], k=3)
    assert hits[0].id == 1007
    assert abs(hits[0].score - 1.0) < 1e-5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_large_collections_get_an_approximate_index_that_agrees_with_exact():
    vectors = clustered(4000)
    ids = np.arange(4000, dtype=np.int64) * 3
    exact = vector_index.build(ids, vectors)
    approx = vector_index.build(ids, vectors, exact_limit=1000)
    assert "IVF" in type(approx).__name__
    queries = clustered(40, seed=1)
    recall = []
    for query in queries:
        truth = {h.id for h in vector_index.search(exact, query, 10)}
        found = {h.id for h in vector_index.search(approx, query, 10)}
        recall.append(len(truth & found) / 10)
    assert np.mean(recall) >= 0.95


def test_ivf_sizes_grow_with_the_square_root_of_the_collection():
    assert vector_index.ivf_lists(1_000_000) == 1024
    assert vector_index.ivf_lists(250_000) == 512
    assert vector_index.ivf_probes(1024) == 64


def test_an_empty_collection_answers_with_no_hits():
    index = vector_index.build(np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32))
    assert vector_index.search(index, np.ones(4, dtype=np.float32), 5) == []


@pytest.mark.parametrize("exact_limit", [2000, 1000], ids=["exact", "inverted-lists"])
def test_k_beyond_the_collection_is_capped_before_anything_is_allocated(exact_limit):
    vectors = clustered(1300)
    index = vector_index.build(np.arange(1300, dtype=np.int64), vectors, exact_limit=exact_limit)
    if exact_limit < 1300:
        index.nprobe = index.nlist  # every list, so that every vector can be found
    hits = vector_index.search(index, vectors[0], k=2**40)  # 8 TiB of ids, were it allocated
    assert sorted(h.id for h in hits) == list(range(1300))


def flat_ip_hits(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int) -> list:
    """What one plain IndexFlatIP scan answers, as (catalog id, score) pairs."""
    import faiss

    plain = faiss.IndexFlatIP(vectors.shape[1])
    plain.add(vectors)
    scores, rows = plain.search(query.reshape(1, -1), k)
    return [(int(ids[r]), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r != -1]


def hits_of(index, query: np.ndarray, k: int, parts: int) -> list:
    return [(h.id, h.score) for h in vector_index.search(index, query, k, parts=parts)]


@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 10, 4000])
def test_exact_search_answers_exactly_what_a_plain_flat_index_answers(parts, k):
    # Ids with gaps, as after photos were removed from the catalog; k=4000 exceeds the count.
    vectors = clustered(3000)
    ids = np.sort(np.random.default_rng(2).choice(10_000, 3000, replace=False)).astype(np.int64)
    index = vector_index.build(ids, vectors)
    for query in clustered(8, seed=3):
        assert hits_of(index, query, k, parts) == flat_ip_hits(ids, vectors, query, k)


def test_exact_search_after_removing_ids_matches_a_flat_index_of_the_rest():
    vectors = clustered(3000)
    ids = np.arange(3000, dtype=np.int64) + 500
    index = vector_index.build(ids, vectors)
    gone = np.arange(500, 3500, 7, dtype=np.int64)
    index.remove_ids(gone)
    keep = ~np.isin(ids, gone)
    for query in clustered(5, seed=4):
        expected = flat_ip_hits(ids[keep], vectors[keep], query, 10)
        assert hits_of(index, query, 10, parts=2) == expected
        assert not {hit_id for hit_id, _ in expected} & set(gone.tolist())


def ids_of(index, query: np.ndarray, k: int, parts: int | None = None) -> list[int]:
    return [h.id for h in vector_index.search(index, query, k, parts=parts)]


def test_tied_scores_rank_by_catalog_id_whatever_k_and_however_the_scan_is_sliced():
    vectors = clustered(3000)
    copies = [0, 999, 1000, 1234, 1499, 1500, 2999]  # either side of the 2- and 3-part bounds
    vectors[copies] = vectors[1234]
    # Ids out of row order, as after a photo is re-embedded (its vector moves to the end).
    ids = np.random.default_rng(5).permutation(3000).astype(np.int64) * 2
    index = vector_index.build(ids, vectors)
    tied = sorted(int(ids[row]) for row in copies)
    for parts in (1, 2, 3):
        every = ids_of(index, vectors[1234], 12, parts)
        assert every[: len(tied)] == tied
        for k in range(1, 13):
            assert ids_of(index, vectors[1234], k, parts) == every[:k], (parts, k)


def test_tied_scores_rank_by_catalog_id_in_inverted_lists_too():
    vectors = clustered(1300)
    copies = list(range(3, 1300, 100))
    vectors[copies] = vectors[3]
    ids = np.random.default_rng(6).permutation(1300).astype(np.int64) + 10
    index = vector_index.build(ids, vectors, exact_limit=1000)
    assert not vector_index._is_exact(index)
    tied = sorted(int(ids[row]) for row in copies)
    every = ids_of(index, vectors[3], 20)
    assert every[: len(tied)] == tied
    for k in range(1, 21):
        assert ids_of(index, vectors[3], k) == every[:k], k


def test_more_slices_than_vectors_still_finds_every_vector_once():
    vectors = clustered(2)
    index = vector_index.build(np.array([7, 9], dtype=np.int64), vectors)
    hits = vector_index.search(index, vectors[1], k=5, parts=4)
    assert [h.id for h in hits] == [9, 7]


def test_a_saved_exact_index_reads_back_and_answers_the_same(tmp_path):
    import faiss

    vectors = clustered(3000)
    ids = np.arange(3000, dtype=np.int64) * 5
    index = vector_index.build(ids, vectors)
    vector_index.save(tmp_path, index, {"catalog": "c", "generation": 1})
    loaded = faiss.read_index(str(tmp_path / vector_index.INDEX_FILE))
    query = clustered(1, seed=5)[0]
    assert hits_of(loaded, query, 10, parts=2) == hits_of(index, query, 10, parts=2)
    assert hits_of(loaded, query, 10, parts=2) == flat_ip_hits(ids, vectors, query, 10)


# -- filtered search ------------------------------------------------------------------------------


def restricted(index, query: np.ndarray, k: int, allowed) -> list:
    """What a filter must answer: the unfiltered search down to every vector, the ids not
    allowed left out, cut at k."""
    keep = set(np.asarray(allowed).tolist())
    every = vector_index.search(index, query, index.ntotal)
    return [(h.id, h.score) for h in every if h.id in keep][:k]


def filtered(index, query: np.ndarray, k: int, allowed, parts: int | None = None) -> list:
    hits = vector_index.search(index, query, k, parts=parts, allowed=allowed)
    return [(h.id, h.score) for h in hits]


@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("share", [0.005, 0.1, 0.9])
def test_an_exact_filtered_search_answers_the_unfiltered_one_without_the_other_ids(parts, share):
    vectors = clustered(3000)
    ids = np.sort(np.random.default_rng(2).choice(10_000, 3000, replace=False)).astype(np.int64)
    index = vector_index.build(ids, vectors)
    rng = np.random.default_rng(7)
    allowed = rng.choice(ids, int(3000 * share), replace=False)
    for query in clustered(5, seed=3):
        for k in (1, 10):
            assert filtered(index, query, k, allowed, parts) == restricted(index, query, k, allowed)


def test_a_filter_keeping_a_far_corner_still_fills_the_top_k():
    vectors = clustered(3000)
    ids = np.arange(3000, dtype=np.int64) + 1
    index = vector_index.build(ids, vectors)
    query = vectors[0]
    farthest = ids[np.argsort(vectors @ query)[:25]]  # the 25 least like the query

    hits = vector_index.search(index, query, 10, allowed=farthest)

    assert len(hits) == 10 and {h.id for h in hits} <= set(farthest.tolist())
    assert [(h.id, h.score) for h in hits] == restricted(index, query, 10, farthest)


def test_tied_scores_rank_by_catalog_id_in_a_filtered_search_too():
    vectors = clustered(3000)
    copies = [0, 999, 1000, 1234, 1499, 1500, 2999]
    vectors[copies] = vectors[1234]
    ids = np.random.default_rng(5).permutation(3000).astype(np.int64) * 2
    index = vector_index.build(ids, vectors)
    # Rows 999, 1000, 1234 and 1499 of the copies, either side of the slices' bounds.
    allowed = np.concatenate([ids[copies[1:5]], ids[1::3]])
    tied = sorted(int(ids[row]) for row in copies[1:5])
    for parts in (1, 2, 3):
        every = ids_of_filtered(index, vectors[1234], 12, allowed, parts)
        assert every[: len(tied)] == tied
        for k in range(1, 13):
            assert ids_of_filtered(index, vectors[1234], k, allowed, parts) == every[:k]


def ids_of_filtered(index, query, k: int, allowed, parts: int | None = None) -> list[int]:
    return [h.id for h in vector_index.search(index, query, k, parts=parts, allowed=allowed)]


def test_allowed_ids_may_come_in_any_order_repeated_or_missing_from_the_index():
    vectors = clustered(500)
    ids = np.arange(500, dtype=np.int64) * 2  # even ids only
    index = vector_index.build(ids, vectors)
    query = clustered(1, seed=9)[0]
    allowed = np.array([40, 8, 8, 41, 999_999, 6, 40, 100, 7], dtype=np.int64)

    hits = vector_index.search(index, query, 10, allowed=allowed)

    assert sorted(h.id for h in hits) == [6, 8, 40, 100]  # all there are, fewer than k
    assert [(h.id, h.score) for h in hits] == restricted(index, query, 10, [6, 8, 40, 100])
    assert vector_index.search(index, query, 10, allowed=np.zeros(0, dtype=np.int64)) == []
    assert vector_index.search(index, query, 10, allowed=np.array([1, 3])) == []


@pytest.fixture
def inverted_lists():
    """4,000 vectors in 64 inverted lists, 8 of them probed per query."""
    vectors = clustered(4000)
    ids = np.random.default_rng(6).permutation(4000).astype(np.int64) * 3 + 1
    index = vector_index.build(ids, vectors, exact_limit=1000)
    assert not vector_index._is_exact(index) and (index.nlist, index.nprobe) == (64, 8)
    return ids, vectors, index


def test_inverted_lists_probing_every_list_answer_a_filter_as_the_unfiltered_search(
    inverted_lists,
):
    ids, _, index = inverted_lists
    index.nprobe = index.nlist
    allowed = np.random.default_rng(8).choice(ids, 1500, replace=False)
    for query in clustered(5, seed=3):
        assert filtered(index, query, 10, allowed) == restricted(index, query, 10, allowed)


def test_inverted_lists_search_a_small_filter_in_every_list(inverted_lists):
    ids, _, index = inverted_lists
    allowed = np.random.default_rng(8).choice(ids, 400, replace=False)  # 1/10; 8 of 64 probed
    for query in clustered(5, seed=3):
        got = filtered(index, query, 10, allowed)
        index.nprobe = index.nlist
        assert got == restricted(index, query, 10, allowed)  # exact, over the stored codes
        index.nprobe = 8


def test_inverted_lists_widen_the_search_until_a_far_filter_fills_the_top_k(inverted_lists):
    ids, vectors, index = inverted_lists
    query = vectors[0]
    farthest = ids[np.argsort(vectors @ query)[:1000]]  # a quarter, all far from the query
    probed = 8 * 1000 // 64  # the allowed vectors 8 lists would hold, were they spread out
    k = 2 * probed

    hits = vector_index.search(index, query, k, allowed=farthest)

    assert len(hits) == k and {h.id for h in hits} <= set(farthest.tolist())
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_tied_scores_rank_by_catalog_id_in_filtered_inverted_lists(inverted_lists):
    ids, vectors, index = inverted_lists
    copies = list(range(3, 4000, 250))
    vectors[copies] = vectors[3]
    index = vector_index.build(ids, vectors, exact_limit=1000)
    allowed = np.concatenate([ids[copies[::2]], ids[::2]])  # copies are on odd rows
    tied = sorted(int(ids[row]) for row in copies[::2])
    every = ids_of_filtered(index, vectors[3], 20, allowed)
    assert every[: len(tied)] == tied
    for k in range(1, 21):
        assert ids_of_filtered(index, vectors[3], k, allowed) == every[:k], k


# -- keeping the saved index up to date ----------------------------------------------------------


def fill(catalog, paths: range, seed: int) -> None:
    from clipcli.store.catalog_records import NewImage

    vectors = clustered(len(paths), seed=seed)
    catalog.add(
        NewImage(f"/photos/{i}.jpg", 1, 1, f"sha{i}-{seed}", v)
        for i, v in zip(paths, vectors, strict=True)
    )


def same_answers(index, fresh, queries) -> None:
    for query in queries:
        got = vector_index.search(index, query, 10)
        expected = vector_index.search(fresh, query, 10)
        assert [h.id for h in got] == [h.id for h in expected]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], atol=1e-6)


@pytest.fixture
def catalog(tmp_path):
    from clipcli.store.catalog import Catalog

    with Catalog(tmp_path) as opened:
        yield opened


def test_a_saved_index_catches_up_in_place_with_adds_replacements_and_removals(
    catalog, tmp_path, monkeypatch
):
    fill(catalog, range(30), seed=1)
    vector_index.refresh(tmp_path, catalog)
    fill(catalog, range(25, 40), seed=2)  # 25-29 replaced, 30-39 new
    catalog.remove([e.id for p, e in catalog.entries().items() if p.endswith(("/3.jpg", "/7.jpg"))])

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the index was rebuilt")

    monkeypatch.setattr(vector_index, "build", no_rebuild)
    index = vector_index.refresh(tmp_path, catalog)
    monkeypatch.undo()
    assert index.ntotal == catalog.count() == 38
    fresh = vector_index.build(*catalog.vectors())
    same_answers(index, fresh, clustered(20, seed=3))
    assert vector_index.refresh(tmp_path, catalog).ntotal == 38  # saved: read back as it is


def test_outgrowing_the_exact_layout_rebuilds_as_inverted_lists(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr(vector_index, "EXACT_LIMIT", 40)
    fill(catalog, range(30), seed=1)
    assert vector_index._is_exact(vector_index.refresh(tmp_path, catalog))
    fill(catalog, range(30, 400), seed=2)
    index = vector_index.refresh(tmp_path, catalog)
    assert not vector_index._is_exact(index)
    assert sorted(vector_index.indexed_ids(index)) == sorted(catalog.ids())


def test_inverted_lists_catch_up_in_place_too(catalog, tmp_path, monkeypatch):
    monkeypatch.setattr(vector_index, "EXACT_LIMIT", 40)
    fill(catalog, range(400), seed=1)
    before = vector_index.refresh(tmp_path, catalog)
    fill(catalog, range(395, 410), seed=2)
    catalog.remove([catalog.entries()["/photos/0.jpg"].id])
    built = []
    monkeypatch.setattr(vector_index, "build", lambda *a, **k: built.append(a))
    index = vector_index.refresh(tmp_path, catalog)
    assert built == []
    assert not vector_index._is_exact(index) and index.nlist == before.nlist
    assert sorted(vector_index.indexed_ids(index)) == sorted(catalog.ids())


def test_an_index_saved_before_stamps_had_a_format_is_rebuilt(catalog, tmp_path, monkeypatch):
    import json

    fill(catalog, range(10), seed=1)
    vector_index.refresh(tmp_path, catalog)
    stamp = tmp_path / vector_index.STAMP_FILE
    old = {k: v for k, v in json.loads(stamp.read_text()).items() if k != "format"}
    stamp.write_text(json.dumps({**old, "generation": old["generation"] - 1}))
    built = []
    original = vector_index.build
    monkeypatch.setattr(vector_index, "build", lambda *a, **k: built.append(1) or original(*a, **k))
    assert vector_index.refresh(tmp_path, catalog).ntotal == 10
    assert built == [1]


def test_new_vectors_alone_are_added_without_a_rebuild(catalog, tmp_path, monkeypatch):
    fill(catalog, range(20), seed=1)
    vector_index.refresh(tmp_path, catalog)
    fill(catalog, range(20, 26), seed=2)
    monkeypatch.setattr(vector_index, "build", lambda *a, **k: pytest.fail("rebuilt"))
    index = vector_index.refresh(tmp_path, catalog)
    assert sorted(vector_index.indexed_ids(index)) == sorted(catalog.ids())
