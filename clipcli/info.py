"""What a user asks first about an index: its model, its photos and where they are, its size."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from clipcli.errors import IndexMissingError
from clipcli.store import vector_index
from clipcli.store.catalog import CATALOG_FILE, Catalog


@dataclass(frozen=True)
class RootInfo:
    path: str
    photos: int
    reachable: bool


@dataclass
class IndexInfo:
    """The --json contract of `clipcli info`."""

    index: str
    model: str | None
    pretrained: str | None
    photos: int
    roots: list[RootInfo] = field(default_factory=list)
    layout: str = "Flat"
    catalog_bytes: int = 0
    faiss_bytes: int = 0
    updated: str | None = None  # ISO 8601, UTC: when the catalog was last written
    skipped: int = 0


def index_info(folder: Path) -> IndexInfo:
    """Read, never write: the catalog is opened read-only and the FAISS file only measured."""
    catalog_file = folder / CATALOG_FILE
    if not catalog_file.is_file():
        raise IndexMissingError(
            f"{folder}: no index here", hint="run `clipcli index DIR` first (or pass --index)"
        )
    with Catalog(folder, read_only=True) as catalog:
        recorded = None if catalog.is_blank else catalog.model()
        photos = 0 if catalog.is_blank else catalog.count()
        roots = [] if catalog.is_blank else catalog.roots()
        counts = catalog.photos_under([root.path for root in roots]) if roots else []
        skipped = 0 if catalog.is_blank else len(catalog.unreadable())
        layout = "Flat"
        if not catalog.is_blank:
            layout = vector_index.layout_name(photos, catalog.vector_size(), catalog.layout())
    return IndexInfo(
        index=str(folder),
        model=recorded.name if recorded else None,
        pretrained=recorded.pretrained if recorded else None,
        photos=photos,
        roots=[
            RootInfo(root.path, count, os.path.isdir(root.path))
            for root, count in zip(roots, counts, strict=True)
        ],
        layout=layout,
        catalog_bytes=_bytes(catalog_file, Path(f"{catalog_file}-wal")),
        faiss_bytes=_bytes(*vector_index.index_files(folder)),
        updated=_updated(catalog_file, Path(f"{catalog_file}-wal")),
        skipped=skipped,
    )


def list_roots(folder: Path) -> list[RootInfo]:
    """Each root with its photo count and whether it can be reached now; read only."""
    return index_info(folder).roots


def _bytes(*paths: Path) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total


def _updated(*paths: Path) -> str | None:
    times = []
    for path in paths:
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            continue
    if not times:
        return None
    return datetime.fromtimestamp(max(times), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
