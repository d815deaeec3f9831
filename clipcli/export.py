"""`clipcli export`: an index's photos and vectors as shards in clip-retrieval's layout.

The catalog is read in id order, a block of vectors at a time, so memory stays bounded; the
shards are written into a temporary folder beside OUT, which takes OUT's name only once the
set is complete: a failed export leaves no OUT behind. The index's writer lock is held while
reading, so that the shards are one state of the index, not one an index run is changing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from clipcli import locks
from clipcli.errors import IndexBusyError, IndexMissingError, UsageError
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.shards.arrow import require_pyarrow
from clipcli.shards.layout import (
    DEFAULT_SHARD_SIZE,
    Manifest,
    ShardModel,
    ShardRow,
    digits_for,
    shard_count,
)
from clipcli.shards.skipped import NOT_UTF8, Skipped, storable_path
from clipcli.shards.writer import ShardWriter
from clipcli.store.catalog import CATALOG_FILE, Catalog
from clipcli.store.index_folder import LOCK_FILE

# Photos read from the catalog at a time: 4096 vectors of 1024 dimensions are 16 MB.
READ_BLOCK = 4096


@dataclass
class ExportReport:
    """What one export wrote; its fields are the --json contract."""

    out: str
    shards: int
    rows: int
    dim: int | None
    model: str
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0


def export_shards(
    folder: Path,
    out: Path,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: ProgressReporter | None = None,
) -> ExportReport:
    """Write every photo of the index in `folder`, in catalog id order, as shards into `out`,
    which must not exist or be an empty folder."""
    started = time.perf_counter()
    require_pyarrow()
    if shard_size < 1:
        raise UsageError(f"--shard-size must be at least 1, not {shard_size}")
    check_new_folder(out)
    if not (folder / CATALOG_FILE).is_file():
        raise IndexMissingError(
            f"{folder}: no index here", hint="run `clipcli index DIR` first (or pass --index)"
        )
    progress = progress or NoProgress()
    with _no_index_run(folder), Catalog(folder, read_only=True) as catalog:
        recorded = None if catalog.is_blank else catalog.model()
        total = 0 if catalog.is_blank else catalog.count()
        if recorded is None or total == 0:
            raise IndexMissingError(
                f"{folder}: the index is empty", hint="run `clipcli index DIR` to add photos"
            )
        model = ShardModel(recorded.name, recorded.pretrained, catalog.weights())
        manifest = Manifest(model, None, digits_for(shard_count(total, shard_size)))
        with _built_beside(out) as building, ShardWriter(building, manifest, shard_size) as writer:
            progress.phase("Exporting", total)
            skipped = _write_rows(catalog, writer, progress)
            manifest = writer.finish()
    return ExportReport(
        out=str(out),
        shards=len(manifest.shards),
        rows=manifest.rows,
        dim=manifest.dim,
        model=model.name,
        skipped=skipped,
        seconds=round(time.perf_counter() - started, 3),
    )


def check_new_folder(out: Path) -> None:
    """A UsageError unless `out` can become a new folder of shards: absent or empty, in a
    folder that exists."""
    hint = "give a folder that does not exist yet, or an empty one"
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder", hint=hint)
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"{out}: exists and is not empty", hint=hint)
    if not out.parent.is_dir():
        raise UsageError(f"{out}: no folder {out.parent} to write it in")


@contextlib.contextmanager
def _built_beside(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` to write into, given `out`'s name when the block ends
    well and removed when it does not."""
    building = out.parent / f".{out.name}.{secrets.token_hex(4)}.part"
    building.mkdir()
    try:
        yield building
        if out.is_dir():
            out.rmdir()  # empty, as checked: a rename cannot replace a folder everywhere
        os.rename(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


@contextlib.contextmanager
def _no_index_run(folder: Path) -> Iterator[None]:
    """Hold the index's writer lock, as `clipcli index` does, so none runs while exporting."""
    try:
        with locks.exclusive(folder / LOCK_FILE, wait=False):
            yield
    except locks.Busy:
        raise IndexBusyError(
            f"{folder}: a `clipcli index` is updating this index",
            hint="wait for it to finish, then export",
        ) from None


def _write_rows(catalog: Catalog, writer: ShardWriter, progress: ProgressReporter) -> list[Skipped]:
    """Every photo, a block at a time, with its file's stats, hash and date."""
    skipped: list[Skipped] = []
    for ids, vectors in catalog.vector_blocks(READ_BLOCK):
        entries = catalog.entries_for(ids.tolist())
        dates = catalog.dates_for(ids.tolist())
        rows, kept = [], []
        for position, id_ in enumerate(ids.tolist()):
            entry = entries[id_]
            if not storable_path(entry.path):
                skipped.append(Skipped(entry.path, NOT_UTF8))
                continue
            row = ShardRow(entry.path, entry.sha256, entry.size, entry.mtime_ns, dates[id_])
            rows.append(row)
            kept.append(position)
        writer.add(rows, vectors[kept])
        progress.advance(len(ids))
    return skipped
