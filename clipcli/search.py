"""Search an index by text, by example image, or both."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipcli.encoders import text_tower
from clipcli.encoders.batching import embed_files
from clipcli.encoders.choose import full_model, load_image_encoder
from clipcli.encoders.torch_clip import Encoder
from clipcli.errors import IndexMissingError, UsageError
from clipcli.models.names import ModelSpec, recorded_spec
from clipcli.preload import import_ahead
from clipcli.store import vector_index
from clipcli.store.catalog import CATALOG_FILE, Catalog
from clipcli.store.text_cache import RAW_QUERY, TextEmbeddingCache
from clipcli.vectors import Embeddings


@dataclass(frozen=True)
class SearchHit:
    rank: int
    path: str
    score: float


@dataclass(frozen=True)
class SearchResult:
    """The hits, best first, and how many indexed photos were left out as gone from disk."""

    hits: list[SearchHit]
    missing: int = 0


def search_index(
    folder: Path,
    query: str | None,
    *,
    image: Path | None = None,
    top_k: int = 10,
    device: str = "auto",
    pretrained: str | None = None,
) -> SearchResult:
    """The photos nearest to the query, best first; the index's own model embeds the query.

    `pretrained` says where the index's checkpoint is now, if it moved since indexing; it must
    hold the same weights (a search never records it: the next `clipcli index` does).

    Photos deleted since they were indexed are left out (and counted), and the next ones fill
    their places: `clipcli index` is what drops them from the catalog.
    """
    query = query if query and query.strip() else None  # spaces alone say nothing either
    if query is None and image is None:
        raise UsageError("nothing to search for", hint="give a text query or --image PATH")
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, not {top_k}")
    if not (folder / CATALOG_FILE).is_file():
        raise IndexMissingError(
            f"{folder}: no index here", hint="run `clipcli index DIR` first (or pass --index)"
        )
    import_ahead("faiss")  # for the vector index, while the query is embedded
    with Catalog(folder, read_only=True) as catalog:  # a search never writes the catalog
        model = None if catalog.is_blank else catalog.model()
        if model is None or catalog.count() == 0:
            raise IndexMissingError(
                f"{folder}: the index is empty", hint="run `clipcli index DIR` to add photos"
            )
        spec = recorded_spec(*model, catalog.weights(), moved_to=pretrained)
        vector = _embed_query(spec, query, image, device)
        index = vector_index.refresh(folder, catalog)
        return _existing_hits(index, vector, top_k, catalog)


def _existing_hits(index: Any, query: Embeddings, top_k: int, catalog: Catalog) -> SearchResult:
    """The top_k nearest photos still on disk; while some are gone, the index is asked for more."""
    wanted = min(top_k, index.ntotal)
    asked = wanted
    while True:
        hits, missing = _on_disk(vector_index.search(index, query, asked), wanted, catalog)
        if len(hits) == wanted or asked == index.ntotal:
            return SearchResult(hits, missing)
        asked = min(2 * asked, index.ntotal)


def _on_disk(
    hits: list[vector_index.Hit], wanted: int, catalog: Catalog
) -> tuple[list[SearchHit], int]:
    """The first `wanted` hits whose files exist, ranked, and how many before them were gone."""
    paths = catalog.paths_for([hit.id for hit in hits])
    found: list[SearchHit] = []
    missing = 0
    for hit in hits:
        path = paths.get(hit.id)
        if path is None:
            continue
        if not os.path.exists(path):
            missing += 1
            continue
        found.append(SearchHit(len(found) + 1, path, hit.score))
        if len(found) == wanted:
            break
    return found, missing


def _embed_query(spec: ModelSpec, query: str | None, image: Path | None, device: str) -> Embeddings:
    """Text and image queries each count once: the mean of their unit vectors, re-normalised.

    Text comes from the query cache, else the exported text tower (no torch); an image goes
    through the exported image tower when auto would run it, else through the loaded model.
    """
    image_encoder = load_image_encoder(spec, device, images=1) if image is not None else None
    model = full_model(image_encoder, spec, device)  # loaded at most once, for either part
    parts = []
    if query:
        parts.append(_cached_text(spec, query, device, model))
    if image is not None:
        batch = next(embed_files(image_encoder, [image], batch_size=1))
        if batch.failures:
            raise batch.failures[0]
        parts.append(batch.embeddings[0])
    if len(parts) == 1:
        return parts[0]
    combined = np.mean(parts, axis=0)
    return (combined / np.linalg.norm(combined)).astype(np.float32)


def _cached_text(
    spec: ModelSpec, query: str, device: str, model: Callable[[], Encoder]
) -> Embeddings:
    with TextEmbeddingCache.default() as cache:
        cached = cache.get(spec.fingerprint, RAW_QUERY, [query]).get(query)
        if cached is None:
            cached = _embed_text(spec, query, device, model)
            cache.put(spec.fingerprint, RAW_QUERY, {query: cached})
    return cached


def _embed_text(
    spec: ModelSpec, query: str, device: str, model: Callable[[], Encoder]
) -> Embeddings:
    fast = text_tower.fast_text_encoder(spec) if device in {"auto", "cpu"} else None
    if fast is not None:
        return fast([query])[0]
    encoder = model()
    text_tower.prepare_fast_search(encoder)  # so that the next search is fast
    return encoder.encode_texts([query])[0]
