"""The FAISS index: a cache of the catalog's vectors, rebuilt whenever it is missing or stale.

The file is stamped with the catalog (id and generation) it was built from; a stamp that does not
match, or a file FAISS cannot read, means rebuild from SQLite. Nothing is lost by deleting it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipcli.catalog import Catalog
from clipcli.encoder import Embeddings

INDEX_FILE = "vectors.faiss"
STAMP_FILE = "vectors.json"


@dataclass(frozen=True)
class Hit:
    """A catalog id and its cosine similarity to the query."""

    id: int
    score: float


def build(ids: np.ndarray, vectors: Embeddings) -> Any:
    """An exact inner-product index (cosine on unit vectors) keyed by catalog ids."""
    import faiss

    dim = vectors.shape[1] if vectors.size else 1
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
    return index


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
