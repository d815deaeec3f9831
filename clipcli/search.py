"""Search an index by text, by example image, or both."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipcli.encoders.choose import recorded_model
from clipcli.errors import IndexMissingError, UsageError
from clipcli.models.names import ModelSpec
from clipcli.preload import import_ahead
from clipcli.query import Filters, Query, parse_terms, query_vector
from clipcli.store import vector_index
from clipcli.store.catalog import CATALOG_FILE, Catalog
from clipcli.vectors import Embeddings

# Candidates an on-disk index scores again on their exact vectors (from the catalog): at 10M
# clustered vectors recall@10 went from 0.962 to 1.0 (bench/RESULTS.md), for 0.4 ms more and
# a lookup of 100 rows by id.
DEFAULT_RERANK = 100


@dataclass(frozen=True)
class SearchHit:
    rank: int
    path: str
    score: float


@dataclass(frozen=True)
class PhotoHit:
    """A hit with its catalog id, for callers that look the photo up again (the server)."""

    id: int
    path: str
    score: float


@dataclass(frozen=True)
class NearestPhotos:
    """The photos nearest a query, best first, and how many were left out as gone from disk."""

    hits: list[PhotoHit]
    missing: int = 0


@dataclass(frozen=True)
class SearchResult:
    """The hits, best first, and how many indexed photos were left out as gone from disk."""

    hits: list[SearchHit]
    missing: int = 0


def search_index(
    folder: Path,
    query: str | None,
    *,
    images: Sequence[Path] = (),
    not_images: Sequence[Path] = (),
    literal: bool = False,
    top_k: int = 10,
    min_score: float | None = None,
    filters: Filters | None = None,
    device: str = "auto",
    pretrained: str | None = None,
    rerank: int = DEFAULT_RERANK,
) -> SearchResult:
    """The photos nearest to the query, best first; the index's own model embeds the query.

    The text is read as terms added and subtracted (query.py) unless `literal`; `images` pull
    towards the photos like them and `not_images` away. Hits scoring below `min_score` (the
    cosine) are left out, so there may be fewer than `top_k`; `filters` keep only the photos
    under folders, taken between dates or of file types, inside the vector search itself.

    `pretrained` says where the index's checkpoint is now, if it moved since indexing; it must
    hold the same weights (a search never records it: the next `clipcli index` does).

    Photos deleted since they were indexed are left out (and counted), and the next ones fill
    their places: `clipcli index` is what drops them from the catalog.

    An on-disk index (`--layout ivfpq`) ranks compressed codes: its `rerank` best candidates
    are scored again on their exact vectors (0: never). Other layouts are not changed by it.
    """
    wanted = Query(parse_terms(query, literal=literal), images, not_images)
    if wanted.is_empty:
        raise UsageError("nothing to search for", hint="give a text query or --image PATH")
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, not {top_k}")
    if rerank < 0:
        raise UsageError(f"--rerank must be 0 or more, not {rerank}")
    require_index(folder)
    import_ahead("faiss")  # for the vector index, while the query is embedded
    with Catalog(folder, read_only=True) as catalog:  # a search never writes the catalog
        spec = index_model(folder, catalog, moved_to=pretrained)
        vector = query_vector(spec, wanted, device)
        index = vector_index.refresh(folder, catalog)
        nearest = nearest_photos(
            index,
            vector,
            top_k,
            catalog,
            min_score=min_score,
            allowed=allowed_ids(catalog, filters),
            rerank=rerank,
        )
    ranked = [SearchHit(rank, hit.path, hit.score) for rank, hit in enumerate(nearest.hits, 1)]
    return SearchResult(ranked, nearest.missing)


def require_index(folder: Path) -> None:
    """IndexMissingError unless `folder` holds a catalog."""
    if not (folder / CATALOG_FILE).is_file():
        raise IndexMissingError(
            f"{folder}: no index here", hint="run `clipcli index DIR` first (or pass --index)"
        )


def index_model(folder: Path, catalog: Catalog, moved_to: str | None = None) -> ModelSpec:
    """The model the index's vectors were made with, found where it is now (see search_index's
    `pretrained`); IndexMissingError for an index that holds no photos."""
    model = None if catalog.is_blank else catalog.model()
    if model is None or catalog.count() == 0:
        raise IndexMissingError(
            f"{folder}: the index is empty", hint="run `clipcli index DIR` to add photos"
        )
    return recorded_model(*model, catalog.weights(), moved_to=moved_to)


def allowed_ids(catalog: Catalog, filters: Filters | None) -> np.ndarray | None:
    """The ids the filters keep, or None for no filter at all (every photo may be a hit)."""
    if filters is None or not filters.any:
        return None
    return catalog.filtered_ids(
        under=filters.under,
        since=filters.since,
        until=filters.until,
        extensions=filters.extensions,
    )


def nearest_photos(
    index: Any,
    query: Embeddings,
    top_k: int,
    catalog: Catalog,
    *,
    min_score: float | None = None,
    allowed: np.ndarray | None = None,
    leave_out: Collection[int] = (),
    rerank: int = DEFAULT_RERANK,
) -> NearestPhotos:
    """The top_k nearest photos still on disk that score at least `min_score`, among the
    `allowed` ids if given, the ids of `leave_out` never among them (a photo's own, when
    searching by it); while some are gone, the index is asked for more. An on-disk index
    re-ranks its `rerank` best candidates on the catalog's vectors (see search_index)."""
    available = index.ntotal if allowed is None else len(allowed)
    wanted = min(top_k, available)
    if wanted == 0:
        return NearestPhotos([])
    asked = min(wanted + len(leave_out), available)
    exact = vector_index.catalog_vectors(catalog, index.d) if rerank else None
    while True:
        found = vector_index.search(
            index, query, asked, allowed=allowed, rerank=rerank, exact_vectors=exact
        )
        unfloored = len(found)
        if min_score is not None:
            found = [hit for hit in found if hit.score >= min_score]
        hits, missing = _on_disk([hit for hit in found if hit.id not in leave_out], wanted, catalog)
        # Done when full, when the index has no more, or when the floor cut what it gave.
        if len(hits) == wanted or asked >= available or len(found) < unfloored:
            return NearestPhotos(hits, missing)
        asked = min(2 * asked, available)


def _on_disk(
    hits: list[vector_index.Hit], wanted: int, catalog: Catalog
) -> tuple[list[PhotoHit], int]:
    """The first `wanted` hits whose files exist, and how many before them were gone."""
    paths = catalog.paths_for([hit.id for hit in hits])
    found: list[PhotoHit] = []
    missing = 0
    for hit in hits:
        path = paths.get(hit.id)
        if path is None:
            continue
        if not os.path.exists(path):
            missing += 1
            continue
        found.append(PhotoHit(hit.id, path, hit.score))
        if len(found) == wanted:
            break
    return found, missing
