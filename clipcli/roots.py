"""Re-pointing a folder an index was built from, whose photos now live elsewhere (a drive mounted
at another place), keeping every vector."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clipcli.errors import IndexMissingError, UsageError
from clipcli.store import index_folder
from clipcli.store.catalog import CATALOG_FILE, Catalog


@dataclass(frozen=True)
class RootMove:
    old: str
    new: str
    photos: int  # how many photos were re-pointed


def move_root(folder: Path, old: Path, new: Path) -> RootMove:
    """Re-point root `old` at `new`: every photo path under it, and the root itself.

    The catalog changes in one transaction, and the FAISS index, which knows photos by id,
    stays as it is.
    """
    source, target = os.path.abspath(old), os.path.abspath(new)
    if not os.path.isdir(target):
        raise UsageError(f"{new}: not a folder", hint="give the folder the photos are in now")
    with index_folder.writing(_existing(folder)), Catalog(folder) as catalog:
        known = [root.path for root in catalog.roots()]
        if source not in known:
            raise UsageError(
                f"{old}: not a root of {folder}",
                hint=f"the roots are {', '.join(known)}" if known else "it has none yet",
            )
        if target in known:
            raise UsageError(
                f"{new}: already a root of {folder}",
                hint=f"use `clipcli index {new}` to bring it up to date instead",
            )
        photos = catalog.move_root(source, target)
    return RootMove(source, target, photos)


def _existing(folder: Path) -> Path:
    if not (folder / CATALOG_FILE).is_file():
        raise IndexMissingError(f"{folder}: no index here", hint="give --index the index folder")
    return folder
