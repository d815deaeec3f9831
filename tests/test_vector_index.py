"""The FAISS layer: exact below a size threshold, inverted lists above it, ids kept."""

from __future__ import annotations

import numpy as np

from clipcli import vector_index


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
