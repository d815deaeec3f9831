"""Every pair of indexed vectors whose cosine reaches a threshold: the candidates for copies of
one picture. FAISS range searches the index against itself, in blocks of queries.

An exact index scores each block of its rows against the rows from that block on, so each pair
is scored once, half the products of a full self-search: 100k vectors of 512 in about 22 s on
two cores (bench/dupes.py). An inverted-lists index (over vector_index.EXACT_LIMIT vectors) is
range-searched with the catalog's vectors as queries, each in a few lists only: copies lie far
closer together than a list is wide, and a pair is found from either of its two photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcli.errors import UsageError
from clipcli.store.catalog import Catalog
from clipcli.store.vector_index import Ids, Scores

if TYPE_CHECKING:
    from clipcli.vectors import Embeddings

# Queries per range search: a block of 4,096 against 100k rows keeps BLAS busy on whole
# panels, and its results are a few MB.
BLOCK = 4096
# Unit vectors scored against themselves, or their copies, come out 1 give or take a few
# float32 ulps: a cosine this close below the threshold reaches it, so threshold 1 still pairs
# identical vectors.
ROUNDING = 1e-6
# Lists an inverted-lists index scans per query; at 1024 lists 4 found every pair of cosine
# 0.95 on clustered vectors, 8 leaves a margin.
PAIR_PROBES = 8
# Past this many pairs the threshold is finding neighbours, not copies, and memory would follow.
MAX_PAIRS = 20_000_000


@dataclass(frozen=True)
class NearPairs:
    """Pairs of catalog ids, the smaller first, each once, sorted; with their cosines."""

    first: Ids
    second: Ids
    scores: Scores

    def __len__(self) -> int:
        return len(self.first)


def near_pairs(index: Any, catalog: Catalog, threshold: float) -> NearPairs:
    """Every pair of distinct vectors in `index` (vector_index.build's, refreshed from
    `catalog`) whose cosine is at least `threshold`. Over the stored vectors: exact for a flat
    index, over fp16 codes (within about 1e-3) and the lists probed for inverted lists."""
    found = _Collected(threshold)
    if _is_flat(index):
        _exact(index, threshold - ROUNDING, found)
    else:
        _inverted_lists(index, catalog, threshold - ROUNDING, found)
    return found.pairs()


def _is_flat(index: Any) -> bool:
    """Whether it is an exact index, as vector_index.build makes them: ids over a flat one."""
    import faiss

    return isinstance(index, faiss.IndexIDMap2) and isinstance(
        faiss.downcast_index(index.index), faiss.IndexFlatIP
    )


class _Collected:
    """Pairs as the blocks find them, each ordered smaller id first."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.parts: list[tuple[Ids, Ids, Scores]] = []
        self.count = 0

    def add(self, first: Ids, second: Ids, scores: Scores) -> None:
        distinct = first != second
        first, second, scores = first[distinct], second[distinct], scores[distinct]
        self.parts.append((np.minimum(first, second), np.maximum(first, second), scores))
        self.count += len(scores)
        if self.count > MAX_PAIRS:
            raise UsageError(
                f"over {MAX_PAIRS:,} pairs of photos have a cosine of {self.threshold} or more",
                hint="ask for a higher --threshold (copies of one picture score 0.95 or more)",
            )

    def pairs(self) -> NearPairs:
        if not self.parts:
            empty = np.zeros(0, dtype=np.int64)
            return NearPairs(empty, empty.copy(), np.zeros(0, dtype=np.float32))
        first, second, scores = (np.concatenate(column) for column in zip(*self.parts, strict=True))
        order = np.lexsort((-scores, second, first))
        first, second, scores = first[order], second[order], scores[order]
        # Found from both photos (inverted lists), a pair is kept once, with its best score.
        once = np.ones(len(first), dtype=bool)
        once[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
        return NearPairs(first[once], second[once], scores[once])


def _exact(index: Any, radius: float, found: _Collected) -> None:
    """Each block of rows of a flat index against the rows from its own first on."""
    import faiss

    count, dim = index.ntotal, index.d
    flat = faiss.downcast_index(index.index)
    vectors = faiss.rev_swig_ptr(flat.get_xb(), count * dim).reshape(count, dim)
    labels = faiss.rev_swig_ptr(index.id_map.data(), count).astype(np.int64)
    for start in range(0, count, BLOCK):
        rows, columns, scores = _range_search(
            vectors[start : start + BLOCK], vectors[start:], radius
        )
        later = columns > rows  # rows before the block's own were its own queries already
        found.add(labels[rows[later] + start], labels[columns[later] + start], scores[later])


def _range_search(queries: Embeddings, rows: Embeddings, radius: float) -> tuple[Ids, Ids, Scores]:
    """(query, row, score) of every inner product above `radius`, counted from 0 in each."""
    import faiss

    result = faiss.RangeSearchResult(len(queries))
    faiss.range_search_inner_product(
        faiss.swig_ptr(queries),
        faiss.swig_ptr(rows),
        queries.shape[1],
        len(queries),
        len(rows),
        radius,
        result,
    )
    limits = faiss.rev_swig_ptr(result.lims, len(queries) + 1).astype(np.int64)
    total = int(limits[-1])
    if not total:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, np.float32)
    columns = faiss.rev_swig_ptr(result.labels, total).astype(np.int64)
    scores = faiss.rev_swig_ptr(result.distances, total).copy()
    return np.repeat(np.arange(len(queries)), np.diff(limits)), columns, scores


def _inverted_lists(index: Any, catalog: Catalog, radius: float, found: _Collected) -> None:
    """The catalog's vectors, a block at a time, range-searched in a few lists each."""
    import faiss

    probes = min(PAIR_PROBES, faiss.extract_index_ivf(index).nlist)
    params = faiss.SearchParametersIVF(nprobe=probes)
    for ids, vectors in catalog.vector_blocks(BLOCK):
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        limits, scores, hits = index.range_search(queries, radius, params=params)
        askers = np.repeat(ids, np.diff(limits.astype(np.int64)))
        found.add(askers, hits.astype(np.int64), scores)
