"""The FAISS index: a cache of the catalog's vectors, rebuilt whenever it is missing or stale.

The file is stamped with the catalog (id and generation) it was built from; a stamp that does not
match, or a file FAISS cannot read, means rebuild from SQLite. Nothing is lost by deleting it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipcli.catalog import Catalog
from clipcli.encoder import Embeddings

INDEX_FILE = "vectors.faiss"
# Exact search up to this many vectors: a flat scan of 200k 512-d vectors takes ~20 ms on two
# laptop cores (bench/RESULTS.md), well inside an interactive budget, and needs no training.
EXACT_LIMIT = 200_000
STAMP_FILE = "vectors.json"


@dataclass(frozen=True)
class Hit:
    """A catalog id and its cosine similarity to the query."""

    id: int
    score: float


def build(ids: np.ndarray, vectors: Embeddings, *, exact_limit: int = EXACT_LIMIT) -> Any:
    """An inner-product index (cosine on unit vectors) keyed by catalog ids.

    Up to `exact_limit` vectors a full scan is both exact and fast enough; beyond it an
    inverted-file index with fp16 codes scans a few percent of the vectors in half the memory.
    """
    import faiss

    dim = vectors.shape[1] if vectors.size else 1
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(ids) <= exact_limit:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    else:
        lists = ivf_lists(len(ids))
        index = faiss.index_factory(dim, f"IVF{lists},SQfp16", faiss.METRIC_INNER_PRODUCT)
        # 64 points per centroid and 10 k-means rounds: a 1M-vector index trains in about a
        # minute on two cores, and the probes make up for slightly rougher lists.
        index.cp.max_points_per_centroid = 64
        index.cp.niter = 10
        index.train(data)
        index.nprobe = ivf_probes(lists)
    if len(ids):
        index.add_with_ids(data, ids)
    return index


def ivf_lists(count: int) -> int:
    """About sqrt(N) lists: k-means stays quick to train and each list holds ~sqrt(N) vectors."""
    return int(2 ** round(math.log2(max(count, 1) ** 0.5)))


def ivf_probes(lists: int) -> int:
    """Lists scanned per query; 1/16 of them kept recall@10 >= 0.95 on clustered data."""
    return max(8, lists // 16)


def save(folder: Path, index: Any, stamp: dict[str, Any]) -> None:
    """Write index then stamp, each atomically, so a crash leaves an old or absent stamp."""
    import faiss

    tmp = folder / f".{INDEX_FILE}.tmp"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, folder / INDEX_FILE)
    stamp_tmp = folder / f".{STAMP_FILE}.tmp"
    stamp_tmp.write_text(json.dumps({**stamp, "count": int(index.ntotal)}))
    os.replace(stamp_tmp, folder / STAMP_FILE)


def _load_if_fresh(folder: Path, expected: dict[str, Any]) -> Any | None:
    import faiss

    try:
        stamp = json.loads((folder / STAMP_FILE).read_text())
        if any(stamp.get(key) != value for key, value in expected.items()):
            return None
        index = faiss.read_index(str(folder / INDEX_FILE))
    except (OSError, ValueError, RuntimeError):
        return None
    return index if index.ntotal == stamp.get("count") else None


def refresh(folder: Path, catalog: Catalog) -> Any:
    """The index for the catalog's current contents, rebuilt and saved if needed."""
    stamp = {"catalog": catalog.catalog_id, "generation": catalog.generation}
    index = _load_if_fresh(folder, stamp)
    if index is None:
        ids, vectors = catalog.vectors()
        index = build(ids, vectors)
        # A read-only index folder still answers searches from the rebuilt index.
        with contextlib.suppress(OSError):
            save(folder, index, stamp)
    return index


def search(index: Any, query: Embeddings, k: int) -> list[Hit]:
    """The k nearest vectors to one unit-length query, best first."""
    if index.ntotal == 0:
        return []
    scores, ids = index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k)
    return [Hit(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]
