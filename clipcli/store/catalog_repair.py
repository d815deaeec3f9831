"""`clipcli index --repair`: a new catalog from what a damaged one still holds.

The damaged file is only ever read, so a repair that fails leaves it as it was. What can be read
goes into a new catalog made by Catalog (at the current schema) in a folder of its own inside the
index folder, and is moved into place only when complete; the damaged file is kept next to it
under a dated name, never deleted. The new catalog has a catalog_id of its own, so the FAISS file
of the damaged one is never taken for it (vector_index rebuilds it), and its generations start
again under that id.

Rows are read by rowid range; a range SQLite cannot read is halved down to single rows, so a
damaged page costs only the rows on it. An index of the images table that still reads in full
lists every id (the path index every path too): it bounds the halving to ids that exist and
names the photos lost. Without one, the rowids that could not be read are counted, ids of photos
removed long ago among them.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipcli.errors import ClipcliError
from clipcli.progress import ProgressReporter
from clipcli.store.catalog import CATALOG_FILE, SCHEMA_VERSION, Catalog, unusable
from clipcli.store.catalog_hashes import stored_picture
from clipcli.store.catalog_records import StoredImage, UnreadableFile, path_from
from clipcli.store.catalog_schema import DATED_SCHEMA, HASHED_SCHEMA

BUILD_PREFIX = ".catalog-repair-"
DAMAGED_INFIX = ".damaged-"
SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's files that belong to the catalog's own
BATCH = 1024  # rows read, and written, at a time: a few MB of vectors
LAST_ROWID = 2**63 - 1
PATH_INDEX = "sqlite_autoindex_images_1"  # of `path UNIQUE`, since the first schema
IMAGE_COLUMNS = "id, path, size, mtime_ns, sha256, embedding, indexed_at"
DATED_COLUMNS = f"{IMAGE_COLUMNS}, taken_at"  # from DATED_SCHEMA on
HASHED_COLUMNS = f"{DATED_COLUMNS}, phash, colours"  # from HASHED_SCHEMA on
UNREADABLE_COLUMNS = "rowid, path, size, mtime_ns, reason"
# Stored vectors are unit length (the encoders normalise them); bf16 ones within a fraction
# of a percent. Noise read through a damaged overflow page is not.
UNIT_TOLERANCE = 0.05  # on the squared length
SHA256 = re.compile("[0-9a-f]{64}")


@dataclass(frozen=True)
class RepairReport:
    """What a repair kept and lost; its fields are the `"repaired"` object of `--json`."""

    damaged: str  # where the damaged file is kept
    kept: int  # photos copied into the new catalog
    lost: int | None  # photos that could not be read or were damaged; None: not countable
    lost_paths: list[str]  # those whose path could still be read


def repair_if_damaged(folder: Path, progress: ProgressReporter) -> RepairReport | None:
    """Repair the catalog in `folder` if SQLite finds it damaged; None when it is sound or
    missing. The caller holds the index's writer lock."""
    catalog = folder / CATALOG_FILE
    if not catalog.is_file():
        return None
    progress.phase("Checking catalog", 1)
    damaged = is_damaged(catalog)
    progress.advance(1)
    if not damaged:
        return None
    progress.phase("Repairing catalog", 1)
    report = repair(folder)
    progress.advance(1)
    return report


def is_damaged(catalog: Path) -> bool:
    """Whether SQLite finds damage in the file. integrity_check reads every page and checks the
    indexes against their tables, which an index run relies on; it costs about one read."""
    try:
        with _reading(catalog) as db:
            verdict = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.OperationalError as exc:  # locked, no permission: not damage to mend
        raise unusable(catalog, exc) from exc
    except sqlite3.DatabaseError:
        return True
    return verdict != [("ok",)]


def repair(folder: Path) -> RepairReport:
    """Replace the catalog in `folder` by one holding every row of it that can still be read,
    keeping the damaged file under a dated name next to it."""
    catalog = folder / CATALOG_FILE
    _remove_leftovers(folder)
    build = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=folder))
    try:
        with _reading(catalog) as db, Catalog(build) as new:
            salvaged = _salvage(db, new, catalog)
        aside = _SetAside(catalog)
        try:
            os.replace(build / CATALOG_FILE, catalog)
        except BaseException:
            aside.undo()
            raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return RepairReport(
        damaged=str(aside.kept),
        kept=salvaged.kept,
        lost=None if salvaged.uncounted else salvaged.lost_count,
        lost_paths=sorted(salvaged.lost_paths),
    )


@contextmanager
def _reading(catalog: Path) -> Iterator[sqlite3.Connection]:
    """A connection that cannot change `catalog`.

    Immutable where no -wal file holds changes: SQLite then creates no -wal or -shm next to it
    either (the writer lock is held, so nobody writes meanwhile). With a -wal, read-only, so
    that the changes in it are read too.
    """
    uri = f"{Path(os.path.abspath(catalog)).as_uri()}?mode=ro"
    if not Path(f"{catalog}-wal").exists():
        uri += "&immutable=1"
    db = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        yield db
    finally:
        db.close()


# -- reading what is left ----------------------------------------------------------------------


@dataclass
class _RowIds:
    """What is known of the ids the images table holds, and which of them could not be read."""

    listed: list[int]  # sorted; every id when `complete`
    complete: bool
    end: int = LAST_ROWID  # past it, where the table ends is unknown: nothing there is halved
    lost: set[int] = field(default_factory=set)
    uncounted: bool = False  # rows past `end` may be lost, uncounted

    def halves(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The ranges to try when [lo, hi] cannot be read; none once it is down to one row,
        which is then lost."""
        if lo > self.end:  # give up, once the row the failed scan dropped is looked up alone
            tail = [(lo, lo)] if lo < hi and not self.uncounted else []
            self.uncounted = True
            return tail
        if hi > self.end:
            return [(lo, self.end), (self.end + 1, hi)]
        if self.complete:
            inside = self.listed[
                bisect.bisect_left(self.listed, lo) : bisect.bisect_right(self.listed, hi)
            ]
            if len(inside) > 1:
                middle = inside[len(inside) // 2]
                return [(lo, middle - 1), (middle, hi)]
            if not inside:
                return []  # no row there: what failed was the way to a damaged neighbour
            if (lo, hi) != (inside[0], inside[0]):
                return [(inside[0], inside[0])]  # the row alone, for the same reason
        if lo == hi:
            self.lost.add(lo)
            return []
        middle = (lo + hi) // 2
        return [(lo, middle), (middle + 1, hi)]


def _read_rows(
    db: sqlite3.Connection, table: str, columns: str, lo: int, hi: int, ids: _RowIds
) -> Iterator[list[tuple]]:
    """The readable rows of `table` whose rowid is in [lo, hi], in rowid order and batches.
    `columns` begins with the rowid."""
    selected = f"SELECT {columns} FROM {table} WHERE"
    span = f"{selected} rowid BETWEEN ? AND ? ORDER BY rowid LIMIT {BATCH}"
    # A scan reads one row past its range, so a range of one row is looked up alone: the
    # row before a damaged page then still reads.
    single = f"{selected} rowid = ?"
    pending = [(lo, hi)]
    while pending:
        start, end = pending.pop()
        while start <= end:
            rows, failed = (
                _fetch(db, span, (start, end)) if start < end else (_fetch(db, single, (start,)))
            )
            if rows:
                yield rows
                if rows[-1][0] >= end:
                    break
                start = rows[-1][0] + 1
            if failed:
                # Python drops the row read just before the error: what is left is tried
                # again, and only a range whose first row fails is halved.
                pending.extend([(start, end)] if rows else reversed(ids.halves(start, end)))
                break
            if len(rows) < BATCH:
                break


def _fetch(db: sqlite3.Connection, query: str, args: tuple[int, ...]) -> tuple[list[tuple], bool]:
    """The rows a query gives before any error, and whether it ended in one."""
    rows = []
    try:
        for row in db.execute(query, args):
            rows.append(row)
    except sqlite3.DatabaseError:
        return rows, True
    return rows, False


def _row_ids(db: sqlite3.Connection, version: int) -> _RowIds:
    """The ids the indexes of the images table list. Each index holds every rowid and is read
    without the table (as a covering index); the smallest first, and one read in full is enough.
    """
    listed: set[int] = set()
    # images_changed, of integers, is the smallest; it came with schema 4.
    indexes = (["images_changed"] if version >= 4 else []) + ["images_sha256", PATH_INDEX]
    for index in indexes:
        try:
            for (id_,) in db.execute(f"SELECT rowid FROM images INDEXED BY {index}"):
                listed.add(id_)
        except sqlite3.DatabaseError:
            continue  # what it listed before the damage still counts
        return _RowIds(sorted(listed), complete=True)
    return _RowIds(sorted(listed), complete=False)


def _paths_of(db: sqlite3.Connection, ids: set[int]) -> dict[int, str]:
    """The paths the path index still gives for `ids`."""
    found: dict[int, str] = {}
    with contextlib.suppress(sqlite3.DatabaseError):  # those read before the damage count
        for id_, path in db.execute(f"SELECT rowid, path FROM images INDEXED BY {PATH_INDEX}"):
            if id_ in ids and isinstance(path, (str, bytes)):
                found[id_] = path_from(path)
    return found


def _bounds(db: sqlite3.Connection, table: str, ids: _RowIds) -> tuple[int, int] | None:
    """The rowid range to read, None when the table is empty. An end that cannot be read is
    widened: to the first rowid SQLite gives, and past the last id known (`ids.end`)."""
    lowest, lowest_read = _scalar(db, f"SELECT min(rowid) FROM {table}")
    highest, highest_read = _scalar(db, f"SELECT max(rowid) FROM {table}")
    if lowest_read and highest_read and lowest is None and not ids.listed:
        return None
    lows = [x for x in (lowest, ids.listed[0] if ids.listed else None) if x is not None]
    highs = [x for x in (highest, ids.listed[-1] if ids.listed else None) if x is not None]
    lo = min(lows) if lowest_read and lows else min([1, *lows])  # SQLite numbers rows from 1
    if highest_read or ids.complete:
        return lo, max(highs, default=lo)
    ids.end = max(highs, default=lo - 1)
    return lo, LAST_ROWID


def _scalar(db: sqlite3.Connection, query: str) -> tuple[int | None, bool]:
    """A query's one value, and whether it could be read at all."""
    try:
        value = db.execute(query).fetchone()[0]
    except sqlite3.DatabaseError:
        return None, False
    return (value if isinstance(value, int) else None), True


def _version(db: sqlite3.Connection, catalog: Path) -> int:
    """The damaged catalog's schema version; the current one when its header is unreadable."""
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError:
        return SCHEMA_VERSION
    if version > SCHEMA_VERSION:  # its tables may hold what this clipcli cannot copy
        raise ClipcliError(
            f"{catalog}: catalog schema {version} is newer than this clipcli understands",
            hint="upgrade clipcli, then repair it",
        )
    return version


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    """The model the vectors were made with; empty when the meta table cannot be read. A scan,
    not a lookup, so that a damaged index of the table does not cost it."""
    try:
        rows = db.execute("SELECT key, value FROM meta NOT INDEXED").fetchall()
    except sqlite3.DatabaseError:
        return {}
    wanted = ("model", "pretrained", "weights")
    return {k: v for k, v in rows if k in wanted and isinstance(v, str)}


# -- checking and copying ----------------------------------------------------------------------


@dataclass
class _Salvaged:
    """The photos a repair kept, and those it lost, named where their path could be read."""

    kept: int = 0
    lost_count: int = 0
    lost_paths: list[str] = field(default_factory=list)
    uncounted: bool = False

    def lose(self, path: str | None) -> None:
        self.lost_count += 1
        if path is not None:
            self.lost_paths.append(path)


def _salvage(db: sqlite3.Connection, new: Catalog, catalog: Path) -> _Salvaged:
    """Copy every readable, sound row of the damaged catalog into `new`."""
    version = _version(db, catalog)
    meta = _meta(db)
    salvaged = _Salvaged()
    # Vectors whose model is unknown cannot be searched with any other: they are embedded again.
    model = meta.get("model")
    if model:
        new.set_model(model, meta.get("pretrained") or None, meta.get("weights") or None)
    ids = _row_ids(db, version)
    by_length: dict[int, list[int]] = {}
    copied = 0
    bounds = _bounds(db, "images", ids)
    columns = _image_columns(db, version)
    for rows in _read_rows(db, "images", columns, *bounds, ids) if bounds else ():
        sound = []
        for row in rows:
            image = _sound_image(row) if model else None
            if image is None:
                salvaged.lose(_readable_path(row[1]))
                continue
            sound.append(image)
            by_length.setdefault(len(image.embedding), []).append(image.id)
        new.restore(sound)
        copied += len(sound)
    paths = _paths_of(db, ids.lost) if ids.lost else {}
    for id_ in ids.lost:
        salvaged.lose(paths.get(id_))
    for _ in range(copied - new.count()):  # rows that claimed a path another row had
        salvaged.lose(None)
    _drop_other_lengths(new, by_length, salvaged)
    salvaged.kept = new.count()
    salvaged.uncounted = ids.uncounted
    _copy_unreadable(db, new, version)
    return salvaged


def _image_columns(db: sqlite3.Connection, version: int) -> str:
    """The columns of the images table to copy: those of its schema version, as far as the
    table's own definition, where it can be read, has them (a header that cannot be read
    claims the current version)."""
    try:
        names = {row[1] for row in db.execute("PRAGMA table_info(images)")}
    except sqlite3.DatabaseError:
        names = set()
    dated = "taken_at" in names if names else version >= DATED_SCHEMA
    hashed = {"phash", "colours"} <= names if names else version >= HASHED_SCHEMA
    return HASHED_COLUMNS if dated and hashed else DATED_COLUMNS if dated else IMAGE_COLUMNS


def _sound_image(row: tuple) -> StoredImage | None:
    """The row as an image, if every value has the type and shape clipcli writes; a date or
    picture hash that is not is dropped (the next index run reads it again), not the photo."""
    id_, path, size, mtime_ns, sha256, embedding, indexed_at = row[:7]
    taken_at = row[7] if len(row) > 7 and isinstance(row[7], (int, float)) else None
    picture = stored_picture(*row[8:10]) if len(row) > 9 else None
    if not (
        _readable_path(path) is not None
        and isinstance(size, int)
        and size >= 0
        and isinstance(mtime_ns, int)
        and _is_sha256(sha256)
        and isinstance(embedding, bytes)
        and _is_unit_vector(embedding)
        and isinstance(indexed_at, (int, float))
    ):
        return None
    return StoredImage(
        id_,
        path_from(path),
        size,
        mtime_ns,
        sha256,
        embedding,
        float(indexed_at),
        None if taken_at is None else float(taken_at),
        picture,
    )


def _readable_path(value: object) -> str | None:
    return path_from(value) if isinstance(value, (str, bytes)) and value else None


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and SHA256.fullmatch(value) is not None


def _is_unit_vector(blob: bytes) -> bool:
    if not blob or len(blob) % 4:
        return False
    values = np.frombuffer(blob, dtype="<f4").astype(np.float64)  # noise squared overflows f4
    squared = float(np.dot(values, values))  # nan from noise is not close to 1 either
    return abs(squared - 1) < UNIT_TOLERANCE


def _drop_other_lengths(new: Catalog, by_length: dict[int, list[int]], salvaged: _Salvaged) -> None:
    """One model makes vectors of one length: rows of any other were damaged."""
    if len(by_length) < 2:
        return
    usual = max(by_length, key=lambda length: len(by_length[length]))
    odd = [id_ for length, found in by_length.items() if length != usual for id_ in found]
    paths = new.paths_for(odd)  # not those that lost their path to another row
    new.remove(list(paths))
    for path in paths.values():
        salvaged.lose(path)


def _copy_unreadable(db: sqlite3.Connection, new: Catalog, version: int) -> None:
    """The files known not to decode, so that they are not decoded again; those lost are only
    tried once more."""
    if version < 2:  # the table came with the second schema
        return
    ids = _RowIds([], complete=False)
    bounds = _bounds(db, "unreadable", ids)
    if bounds is None:
        return
    for rows in _read_rows(db, "unreadable", UNREADABLE_COLUMNS, *bounds, ids):
        new.set_unreadable(
            [
                UnreadableFile(path_from(path), size, mtime_ns, reason)
                for _, path, size, mtime_ns, reason in rows
                if _readable_path(path) is not None
                and isinstance(size, int)
                and isinstance(mtime_ns, int)
                and isinstance(reason, str)
            ]
        )


# -- putting the new catalog in place ----------------------------------------------------------


class _SetAside:
    """The damaged file (and its -wal, -shm) under a dated name next to it.

    A hard link, where the file system has them, keeps the catalog's own name taken until the
    new catalog replaces it, so no moment is without a catalog; the side files move before
    the new catalog comes in, lest SQLite apply the damaged one's -wal to it.
    """

    def __init__(self, catalog: Path) -> None:
        self.catalog = catalog
        self.kept = _free_name(catalog)
        self.linked = True
        self.moved: list[str] = []
        try:
            os.link(catalog, self.kept)
        except OSError:
            self.linked = False
            os.rename(catalog, self.kept)
        try:
            for suffix in SIDE_FILES:
                if os.path.lexists(f"{catalog}{suffix}"):
                    os.rename(f"{catalog}{suffix}", f"{self.kept}{suffix}")
                    self.moved.append(suffix)
        except BaseException:
            self.undo()
            raise

    def undo(self) -> None:
        """Everything back as it was: the damaged catalog in place, with its side files."""
        for suffix in self.moved:
            with contextlib.suppress(OSError):
                os.rename(f"{self.kept}{suffix}", f"{self.catalog}{suffix}")
        with contextlib.suppress(OSError):
            if self.linked:
                self.kept.unlink()
            else:
                os.rename(self.kept, self.catalog)


def _free_name(catalog: Path) -> Path:
    """`catalog.sqlite3.damaged-YYYYmmddTHHMMSS`, numbered when a repair the same second took it."""
    stem = f"{catalog.name}{DAMAGED_INFIX}{time.strftime('%Y%m%dT%H%M%S')}"
    for number in range(1, 1000):
        name = catalog.with_name(stem if number == 1 else f"{stem}-{number}")
        if not any(os.path.lexists(f"{name}{suffix}") for suffix in ("", *SIDE_FILES)):
            return name
    raise ClipcliError(f"{catalog.parent}: too many damaged catalogs kept here")


def _remove_leftovers(folder: Path) -> None:
    """Folders of repairs that were killed: under the writer lock, none is another run's."""
    for entry in folder.iterdir():
        if entry.name.startswith(BUILD_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
