"""Keeping a catalog's on-disk index (ondisk_ivfpq) up to date with it.

An index of an earlier generation catches up: its lists are copied with the vectors written
since added and those replaced or gone removed, without training or encoding the rest again.
When the collection has outgrown its lists (or the vectors changed size) the index is trained
anew on a sample; otherwise a rebuild (an unreadable index) reuses the trained, empty index
saved beside it. The catalog is read a block at a time, so memory stays bounded.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from clipcli.errors import ClipcliError
from clipcli.store import ondisk_ivfpq
from clipcli.store.catalog import Catalog
from clipcli.store.ondisk_ivfpq import AddShards, Shape

BLOCK = 100_000  # vectors read from the catalog at a time: 200 MB of float32 at 512-d
SAMPLE_SEED = 0  # the same catalog trains the same index


def refreshed(
    index_file: Path,
    catalog: Catalog,
    saved: tuple[Any, int] | None,
    *,
    in_place: bool,
    add_shards: AddShards | None = None,
) -> Any:
    """The on-disk index of the catalog's current contents, memory-mapped; `saved` is the mapped
    index found at `index_file` and the generation it reflects, if any.

    Without `in_place` (a reader, such as the server, that must not write the index folder;
    or a folder it cannot write), the new files go to a private temporary folder, deleted once
    the index is mapped: the mapping outlives the names. A build fills its shards with
    `add_shards` where given (ondisk_ivfpq.build's add_in_parallel), here otherwise.
    """
    if in_place:
        try:
            return _refreshed_at(index_file, catalog, saved, add_shards)
        except PermissionError:
            pass
    with tempfile.TemporaryDirectory(prefix="clipcli-index-") as scratch:
        private = Path(scratch) / index_file.name
        trained = ondisk_ivfpq.trained_file(index_file)
        if trained.is_file():
            shutil.copyfile(trained, ondisk_ivfpq.trained_file(private))
        try:
            return _refreshed_at(private, catalog, saved, add_shards)
        except OSError as exc:
            raise ClipcliError(
                f"cannot build the on-disk index in {scratch} ({exc.strerror or exc})",
                hint="free some disk space, or point TMPDIR at a disk with room",
            ) from None


def _refreshed_at(
    index_file: Path,
    catalog: Catalog,
    saved: tuple[Any, int] | None,
    add_shards: AddShards | None,
) -> Any:
    count = catalog.count()
    dim = catalog.vector_size()
    shape = Shape.for_count(count, dim)
    reusable = _same_codes(ondisk_ivfpq.trained_shape(index_file), shape)
    if saved is not None and saved[0].d == dim and reusable:
        index = _caught_up(index_file, *saved, catalog)
        if index is not None:
            return index
    sample = None if reusable else _sample(catalog, count, shape)
    return ondisk_ivfpq.build(
        index_file,
        catalog.vector_blocks(BLOCK),
        sample,
        dim=dim,
        count=count,
        lists=shape.lists,
        codes=shape.codes,
        add_in_parallel=add_shards,
    )


def _same_codes(trained: Shape | None, wanted: Shape) -> bool:
    """Whether the trained index can serve: the same lists and codes (probes may differ)."""
    if trained is None:
        return False
    return (trained.dim, trained.lists, trained.codes) == (wanted.dim, wanted.lists, wanted.codes)


def _caught_up(index_file: Path, index: Any, generation: int, catalog: Catalog) -> Any | None:
    """`index`, saved at `generation`, brought to the catalog's contents; None to rebuild."""
    count = catalog.count()
    ids, vectors = catalog.vectors(changed_after=generation)
    stale = catalog.outdated(ondisk_ivfpq.list_ids(index), ids)
    fresh = ondisk_ivfpq.catch_up(index_file, index, (ids, vectors), stale)
    return fresh if fresh.ntotal == count else None


def _sample(catalog: Catalog, count: int, shape: Shape) -> np.ndarray:
    """Vectors drawn at random from the whole catalog (its first ones may all be of one trip),
    as many as the training uses (ondisk_ivfpq.sample_size)."""
    ids = catalog.ids()
    size = ondisk_ivfpq.sample_size(count, shape.lists)
    chosen = np.sort(np.random.default_rng(SAMPLE_SEED).choice(ids, size, replace=False))
    rows = np.empty((size, shape.dim), dtype=np.float32)
    filled = 0
    for start in range(0, size, BLOCK):
        part = chosen[start : start + BLOCK].tolist()
        found = catalog.vectors_for(part)
        for id_ in part:
            if id_ in found:
                rows[filled] = found[id_]
                filled += 1
    return rows[:filled]
