"""The on-disk layout: IVF with 8-bit codes trained on a sample, filled shard by shard, its
lists merged into one file and searched memory-mapped; re-ranked on exact vectors; replaced
only whole."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import NON_UTF8_NAME, clustered_vectors, snapshot

from clipcli.store import ondisk_ivfpq

DIM = 64


def clustered(count: int, clusters: int = 50, seed: int = 0) -> np.ndarray:
    return clustered_vectors(count, DIM, clusters=clusters, seed=seed)


def chunks_of(ids: np.ndarray, vectors: np.ndarray, size: int):
    for start in range(0, len(ids), size):
        yield ids[start : start + size], vectors[start : start + size]


def built(folder: Path, ids: np.ndarray, vectors: np.ndarray, chunk: int = 1000, **options):
    return ondisk_ivfpq.build(
        folder / "vectors.faiss",
        chunks_of(ids, vectors, chunk),
        vectors[: ondisk_ivfpq.sample_size(len(ids), ondisk_ivfpq.lists_for(len(ids)))],
        dim=DIM,
        count=len(ids),
        **options,
    )


def exact_top(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int):
    """The exact top k as (ids, scores), ties by id."""
    scores = vectors @ query
    best = np.lexsort((ids, -scores))[:k]
    return ids[best], scores[best]


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """200k clustered vectors, built on disk in 25 shards, two at a time."""
    folder = tmp_path_factory.mktemp("large")
    vectors = clustered(200_000, clusters=200)
    ids = np.arange(200_000, dtype=np.int64) * 7 + 3
    index = built(folder, ids, vectors, chunk=8_000, workers=2)
    return folder, ids, vectors, index


def test_lists_merged_on_disk_answer_as_the_same_trained_index_filled_in_memory(large):
    folder, ids, vectors, mapped = large
    in_memory = ondisk_ivfpq._read(ondisk_ivfpq.trained_file(folder / "vectors.faiss"))
    in_memory.add_with_ids(vectors, ids)
    assert mapped.ntotal == in_memory.ntotal == 200_000
    for query in clustered(20, clusters=200, seed=1):
        on_disk = ondisk_ivfpq.search(mapped, query, 10)
        filled = ondisk_ivfpq.search(in_memory, query, 10)
        assert on_disk[1].tolist() == filled[1].tolist()
        assert on_disk[0].tolist() == filled[0].tolist()  # the same codes: the same scores


def test_the_lists_are_searched_from_a_mapped_file(large):
    folder, _, _, mapped = large
    lists = ondisk_ivfpq.on_disk_lists(mapped)
    assert lists is not None and lists.read_only
    data = folder / lists.filename
    assert data.suffix == ".ivfdata" and data.stat().st_size >= lists.totsize
    maps = Path("/proc/self/maps")
    if maps.is_file():
        assert str(data) in maps.read_text()


def test_the_lists_are_sized_by_the_square_root_and_coded_a_byte_per_dimension(large):
    folder, _, _, mapped = large
    shape = ondisk_ivfpq.trained_shape(folder / "vectors.faiss")
    assert (shape.lists, shape.codes, shape.probes) == (512, "SQ8", 8)
    assert ondisk_ivfpq.on_disk_lists(mapped).code_size == DIM
    assert ondisk_ivfpq.lists_for(10_000_000) == 4096
    assert ondisk_ivfpq.probes_for(4096) == 16


def test_reranking_finds_more_of_the_exact_top_ten(tmp_path):
    vectors = clustered(20_000, clusters=20)
    ids = np.arange(20_000, dtype=np.int64)
    index = built(tmp_path, ids, vectors, codes="PQ8x8")  # coarse codes: 8 dimensions a byte

    def recall(rerank: int | None) -> float:
        found = []
        for query in clustered(30, clusters=20, seed=2):
            truth = set(exact_top(vectors, ids, query, 10)[0].tolist())
            got = ondisk_ivfpq.search(
                index, query, 10, rerank=rerank, exact_vectors=lambda i: vectors[i]
            )[1]
            found.append(len(truth & set(got.tolist())) / 10)
        return float(np.mean(found))

    plain, reranked = recall(None), recall(200)
    assert plain < 0.8 and reranked > plain + 0.15


def test_reranking_every_candidate_in_every_list_is_exact_search(tmp_path):
    vectors = clustered(1500)
    vectors[1000:1010] = vectors[5]  # copies share a vector, and tie
    ids = np.arange(1500, dtype=np.int64)[::-1].copy()  # ids not in row order
    index = built(tmp_path, ids, vectors)
    lists = ondisk_ivfpq.trained_shape(tmp_path / "vectors.faiss").lists
    for query in [vectors[5], *clustered(10, seed=3)]:
        want_ids, want_scores = exact_top(vectors, ids, query, 15)
        scores, got = ondisk_ivfpq.search(
            index, query, 15, nprobe=lists, rerank=1500,
            exact_vectors=lambda i: vectors[1500 - 1 - i],
        )  # fmt: skip
        assert got.tolist() == want_ids.tolist()
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_tied_codes_rank_by_id_whatever_k(tmp_path):
    vectors = clustered(2000)
    vectors[100:140] = vectors[7]  # 41 copies of one vector: one code
    ids = np.random.default_rng(4).permutation(2000).astype(np.int64)
    index = built(tmp_path, ids, vectors)
    tied = sorted(ids[[7, *range(100, 140)]].tolist())
    every = ondisk_ivfpq.search(index, vectors[7], 41)[1].tolist()
    assert every == tied
    for k in (1, 5, 20, 40):
        assert ondisk_ivfpq.search(index, vectors[7], k)[1].tolist() == tied[:k]
        reranked = ondisk_ivfpq.search(
            index, vectors[7], k, rerank=10, exact_vectors=lambda i: vectors[np.argsort(ids)[i]]
        )[1]
        assert reranked.tolist() == tied[:k]


def test_a_selector_keeps_only_its_ids(tmp_path):
    import faiss

    vectors = clustered(2000)
    ids = np.arange(2000, dtype=np.int64)
    index = built(tmp_path, ids, vectors)
    allowed = np.arange(0, 2000, 5, dtype=np.int64)
    selector = faiss.IDSelectorBatch(len(allowed), faiss.swig_ptr(allowed))
    _, found = ondisk_ivfpq.search(index, vectors[3], 10, nprobe=index.nlist, selector=selector)
    assert len(found) == 10 and all(i % 5 == 0 for i in found)


@pytest.mark.parametrize("count", [2, 5, 40, 300])
def test_tiny_collections_get_fewer_lists_and_codes_and_still_find_every_vector(tmp_path, count):
    vectors = clustered(count, seed=count)
    ids = np.arange(count, dtype=np.int64) + 10
    index = built(tmp_path, ids, vectors)
    shape = ondisk_ivfpq.trained_shape(tmp_path / "vectors.faiss")
    assert shape.lists == max(1, min(ondisk_ivfpq.lists_for(count), count // 39))
    _, found = ondisk_ivfpq.search(index, vectors[1], count, nprobe=shape.lists)
    assert sorted(found.tolist()) == ids.tolist()
    _, best = ondisk_ivfpq.search(
        index, vectors[1], 1, rerank=count, exact_vectors=lambda i: vectors[i - 10]
    )
    assert best.tolist() == [11]


def test_a_failed_build_leaves_the_previous_index_as_it_was(tmp_path):
    vectors = clustered(1500)
    ids = np.arange(1500, dtype=np.int64)
    index = built(tmp_path, ids, vectors)
    before = snapshot(tmp_path)

    def failing():
        yield from chunks_of(ids[:1000], vectors[:1000] * -1, 500)
        raise OSError("the disk went away")

    with pytest.raises(OSError, match="went away"):
        ondisk_ivfpq.build(tmp_path / "vectors.faiss", failing(), vectors, dim=DIM, count=1500)
    assert snapshot(tmp_path) == before  # no shard, no new lists, no temporary folder
    again = ondisk_ivfpq.open_mapped(tmp_path / "vectors.faiss")
    assert ondisk_ivfpq.search(again, vectors[9], 3)[1].tolist() == (
        ondisk_ivfpq.search(index, vectors[9], 3)[1].tolist()
    )


def test_a_rebuild_without_a_sample_reuses_the_trained_index(tmp_path):
    vectors = clustered(2000)
    ids = np.arange(2000, dtype=np.int64)
    built(tmp_path, ids, vectors)
    trained = (tmp_path / "vectors.trained.faiss").read_bytes()
    first_lists = sorted(tmp_path.glob("*.ivfdata"))
    index = ondisk_ivfpq.build(
        tmp_path / "vectors.faiss", chunks_of(ids[::2], vectors[::2], 700), None, dim=DIM,
        count=1000,
    )  # fmt: skip
    assert (tmp_path / "vectors.trained.faiss").read_bytes() == trained
    assert index.ntotal == 1000
    assert sorted(tmp_path.glob("*.ivfdata")) != first_lists and len(first_lists) == 1
    assert len(list(tmp_path.glob("*.ivfdata"))) == 1  # the old lists are gone


def test_catching_up_copies_the_lists_without_the_stale_ids_and_adds_the_new(tmp_path):
    vectors = clustered(2500)
    ids = np.arange(2500, dtype=np.int64)
    index = built(tmp_path, ids, vectors)
    old_lists = tmp_path / ondisk_ivfpq.on_disk_lists(index).filename
    replaced = clustered(100, seed=8)
    changed_ids = np.concatenate([ids[:100], np.arange(2500, 2800)])
    changed = np.concatenate([replaced, clustered(300, seed=9)])
    stale = np.concatenate([ids[:100], ids[2000:2100]])  # replaced, and removed
    fresh = ondisk_ivfpq.catch_up(tmp_path / "vectors.faiss", index, (changed_ids, changed), stale)
    held = np.setdiff1d(np.concatenate([ids, changed_ids]), ids[2000:2100])
    assert sorted(ondisk_ivfpq.list_ids(fresh).tolist()) == held.tolist()
    # The old lists are gone from the folder, but a search that mapped them reads them whole.
    assert not old_lists.exists() and sorted(ondisk_ivfpq.list_ids(index)) == ids.tolist()
    lists = ondisk_ivfpq.trained_shape(tmp_path / "vectors.faiss").lists
    assert ondisk_ivfpq.search(fresh, replaced[3], 1, nprobe=lists)[1].tolist() == [3]
    removed = ondisk_ivfpq.search(fresh, vectors[2050], 5, nprobe=lists)[1]
    assert not set(removed.tolist()) & set(ids[2000:2100].tolist())


def test_building_prints_nothing(tmp_path, capfd):
    vectors = clustered(1000)
    index = built(tmp_path, np.arange(1000, dtype=np.int64), vectors)
    ondisk_ivfpq.catch_up(
        tmp_path / "vectors.faiss", index, (np.array([5000]), vectors[:1]), np.array([1])
    )
    assert capfd.readouterr() == ("", "")  # faiss's "resizing ..." neither on stdout nor stderr


def test_an_index_folder_whose_name_is_not_utf8_works_too(tmp_path):
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/" + NON_UTF8_NAME))
    folder.mkdir()
    vectors = clustered(2000)
    index = built(folder, np.arange(2000, dtype=np.int64), vectors)
    again = ondisk_ivfpq.open_mapped(folder / "vectors.faiss")
    assert ondisk_ivfpq.search(again, vectors[4], 1)[1].tolist() == (
        ondisk_ivfpq.search(index, vectors[4], 1)[1].tolist()
    )
