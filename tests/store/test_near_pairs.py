"""The pairs of indexed vectors whose cosine reaches a threshold: every one, each once, from an
exact index exactly and from inverted lists as far as copies go."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from clipcli.errors import UsageError
from clipcli.store import near_pairs as near_pairs_module
from clipcli.store import vector_index
from clipcli.store.near_pairs import near_pairs


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def with_copies(count: int, dim: int, copies: int, seed: int) -> np.ndarray:
    """Unrelated unit vectors, the last `copies` of them noisy copies of the first ones."""
    rng = np.random.default_rng(seed)
    vectors = unit(rng.standard_normal((count, dim)))
    noise = rng.standard_normal((copies, dim)) * (0.15 / np.sqrt(dim))
    vectors[count - copies :] = unit(vectors[:copies] + noise)
    return vectors


class Vectors:
    """The catalog's side of it: its vectors a block at a time, in id order."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.ids, self.rows = ids, vectors

    def vector_blocks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self.ids), size):
            yield self.ids[start : start + size], self.rows[start : start + size]


def brute_force(ids: np.ndarray, vectors: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    scores = vectors @ vectors.T
    rows, columns = np.nonzero(np.triu(scores >= threshold, k=1))
    return {
        (int(min(ids[a], ids[b])), int(max(ids[a], ids[b])))
        for a, b in zip(rows, columns, strict=True)
    }


def found(pairs) -> set[tuple[int, int]]:
    return set(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True))


def test_an_exact_index_gives_every_pair_at_the_threshold_once_smaller_id_first(monkeypatch):
    monkeypatch.setattr(near_pairs_module, "BLOCK", 64)  # many blocks, pairs across them
    vectors = with_copies(1000, 32, 150, seed=0)
    ids = np.arange(1000, dtype=np.int64)[::-1] * 7 + 3  # ids in no order of the rows
    index = vector_index.build(ids, vectors)

    pairs = near_pairs(index, Vectors(ids, vectors), 0.95)

    assert found(pairs) == brute_force(ids, vectors, 0.95)
    assert len(found(pairs)) == len(pairs) >= 150
    assert (pairs.first < pairs.second).all()
    listed = list(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True))
    assert listed == sorted(listed)
    exact = vectors @ vectors.T
    row = {int(id_): n for n, id_ in enumerate(ids)}
    expected = [exact[row[a], row[b]] for a, b in listed]
    np.testing.assert_allclose(pairs.scores, expected, atol=1e-5)


def test_identical_vectors_pair_at_threshold_1_and_a_vector_never_pairs_with_itself():
    vectors = with_copies(50, 16, 0, seed=1)
    vectors[10] = vectors[3]
    vectors[20] = vectors[3]
    ids = np.arange(1, 51, dtype=np.int64)

    pairs = near_pairs(vector_index.build(ids, vectors), Vectors(ids, vectors), 1.0)

    assert found(pairs) == {(4, 11), (4, 21), (11, 21)}


def test_inverted_lists_find_the_copies_each_pair_once():
    vectors = with_copies(4000, 32, 300, seed=2)
    ids = np.arange(1, 4001, dtype=np.int64)
    index = vector_index.build(ids, vectors, exact_limit=0)
    assert index.nlist > 1  # inverted lists, not a flat index

    pairs = near_pairs(index, Vectors(ids, vectors), 0.95)

    truth = brute_force(ids, vectors, 0.95)
    assert len(found(pairs) & truth) >= 0.99 * len(truth)
    assert found(pairs) <= brute_force(ids, vectors, 0.95 - 1e-3)  # fp16 codes
    assert len(found(pairs)) == len(pairs)


def test_an_empty_answer_is_three_empty_columns():
    vectors = with_copies(100, 16, 0, seed=3)
    ids = np.arange(100, dtype=np.int64)

    pairs = near_pairs(vector_index.build(ids, vectors), Vectors(ids, vectors), 0.99)

    assert len(pairs) == 0 and pairs.first.dtype == np.int64 and len(pairs.scores) == 0


def test_a_threshold_that_pairs_everything_is_refused_before_memory_runs_out(monkeypatch):
    monkeypatch.setattr(near_pairs_module, "MAX_PAIRS", 1000)
    vectors = unit(np.ones((100, 8)) + np.random.default_rng(4).normal(0, 0.01, (100, 8)))
    ids = np.arange(100, dtype=np.int64)

    with pytest.raises(UsageError) as caught:
        near_pairs(vector_index.build(ids, vectors), Vectors(ids, vectors), 0.5)

    assert "over 1,000 pairs of photos have a cosine of 0.5 or more" in caught.value.message
    assert "--threshold" in (caught.value.hint or "")
