"""Keeping an index's roots true: forgetting one, pruning photos whose files are gone, and
telling a root that is only unmounted from one whose photos were deleted."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence

from clipcli.store.catalog import Catalog


def unreachable_roots(catalog: Catalog, running: Collection[str] = ()) -> list[str]:
    """Known roots not among `running` (this run's, absolute) whose folder is not there now:
    a drive not mounted, a share not connected. Their photos are kept."""
    return [
        root.path
        for root in catalog.roots()
        if root.path not in running and not os.path.isdir(root.path)
    ]


def is_under(path: str, folders: Sequence[str]) -> bool:
    return any(path.startswith(os.path.join(folder, "")) for folder in folders)


def forget(catalog: Catalog, folders: Sequence[str]) -> int:
    """Drop folders (absolute) and every photo under them, without reading the disk; how many
    photos went."""
    ids = catalog.filtered_ids(under=list(folders)) if folders else []
    catalog.remove([int(i) for i in ids])
    known = {root.path for root in catalog.roots()}
    for folder in folders:
        if folder in known:
            catalog.drop_root(folder)
    return len(ids)


def prune(catalog: Catalog) -> tuple[int, list[str]]:
    """Drop the photos whose files are gone, except those of unreachable roots; how many went,
    and the roots that were skipped as unreachable."""
    skipped = unreachable_roots(catalog)
    gone = [
        entry.id
        for path, entry in catalog.entries().items()
        if not is_under(path, skipped) and not os.path.lexists(path)
    ]
    catalog.remove(gone)
    return len(gone), skipped


def drop_emptied(catalog: Catalog, running: Collection[str]) -> None:
    """Forget the unreachable roots whose photos all moved elsewhere (found by content under
    a root of this run): the drive was mounted at another place."""
    emptied = unreachable_roots(catalog, running)
    for root, count in zip(emptied, catalog.photos_under(emptied), strict=True):
        if count == 0:
            catalog.drop_root(root)
