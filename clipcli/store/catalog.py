"""The SQLite catalog: the source of truth for what is indexed (paths, stats, hashes, vectors).

Embeddings are stored as little-endian float32 BLOBs. Every change to the set of vectors or their
paths bumps `generation`, so derived files (the FAISS index) can tell whether they are stale.

Paths are stored as text when they are UTF-8, as nearly all are; a file name that is not (made
on a system with another encoding: Python sees its odd bytes as lone surrogates) is stored as a
BLOB of its exact bytes, so that it reads back as the very path the filesystem knows.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import numpy as np

from clipcli.errors import CatalogUnreadableError, ClipcliError
from clipcli.store import catalog_filters, catalog_hashes, catalog_roots
from clipcli.store.catalog_records import (
    CatalogEntry,
    Dated,
    Hashed,
    HashedEntry,
    Move,
    NewImage,
    RecordedModel,
    StoredImage,
    Touch,
    Undated,
    Unhashed,
    Unreadable,
    UnreadableFile,
    path_from,
    path_value,
)
from clipcli.store.catalog_roots import Root
from clipcli.store.catalog_schema import DATED_SCHEMA, MIGRATIONS, SCHEMA_VERSION, statements
from clipcli.vectors import from_blob, to_blob

if TYPE_CHECKING:
    from clipcli.media.perceptual_hash import PictureHash
    from clipcli.vectors import Embeddings

CATALOG_FILE = "catalog.sqlite3"


# SQLite errors that mean a bug in the statement clipcli sent, not a problem with the file.
_OUR_MISTAKES = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    sqlite3.NotSupportedError,
)
# Search only reads, so an index run does the repair; it keeps the damaged file next to the new one.
DAMAGED_HINT = (
    "run `clipcli index FOLDER --repair` (with the same --index, if any) to keep what it still"
    " holds and embed the rest again"
)

P = ParamSpec("P")
R = TypeVar("R")


def unusable(path: Path, exc: sqlite3.DatabaseError) -> ClipcliError:
    """One line for the user that names the catalog file and what is wrong with it."""
    if isinstance(exc, sqlite3.OperationalError):  # locked, read-only, disk full, I/O error...
        return CatalogUnreadableError(f"{path}: cannot use the catalog ({exc})")
    return CatalogUnreadableError(
        f"{path}: not a readable clipcli catalog (damaged: {exc})", hint=DAMAGED_HINT
    )


def _reported(method: Callable[Concatenate[Catalog, P], R]) -> Callable[Concatenate[Catalog, P], R]:
    """SQLite's errors about the file (damage, locks, a full disk) as a CatalogUnreadableError;
    a mistake in clipcli's own statements keeps its traceback. A generator's errors come as it
    is iterated, after the call has returned: they are translated there."""
    if inspect.isgeneratorfunction(method):
        return _reported_generator(method)  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: Catalog, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with _file_errors(self.path):
            return method(self, *args, **kwargs)

    return wrapper


def _reported_generator(
    method: Callable[Concatenate[Catalog, P], Iterator[R]],
) -> Callable[Concatenate[Catalog, P], Iterator[R]]:
    @functools.wraps(method)
    def wrapper(self: Catalog, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        with _file_errors(self.path):
            yield from method(self, *args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _file_errors(path: Path) -> Iterator[None]:
    """See _reported."""
    try:
        yield
    except _OUR_MISTAKES:
        raise
    except sqlite3.DatabaseError as exc:
        raise unusable(path, exc) from exc


class Catalog:
    """One index folder's catalog. Use as a context manager; writes are one transaction each.

    `read_only` is for commands that only read (search): the file must exist, nothing is
    migrated, and SQLite refuses any write. The connection is read-write at the file level
    all the same: in WAL mode only such a connection, closing last, removes the -wal and -shm
    files it opened, where a `mode=ro` one would leave them behind in the index folder.
    """

    schema_version: int

    def __init__(self, folder: Path, *, read_only: bool = False) -> None:
        self.path = folder / CATALOG_FILE
        self.read_only = read_only
        if not read_only:
            folder.mkdir(parents=True, exist_ok=True)
        try:
            if read_only:  # mode=rw: open the file that is there, never create one
                uri = f"{Path(os.path.abspath(self.path)).as_uri()}?mode=rw"
                self._db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
            else:
                self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise unusable(self.path, exc) from exc
        try:
            self._prepare()
        except BaseException:
            self._db.close()
            raise

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._db.in_transaction:  # an upgrade no write needed: the catalog stays as it was
            self._db.execute("ROLLBACK")
        self._db.close()

    @_reported
    def _prepare(self) -> None:
        if self.read_only:
            self._db.execute("PRAGMA query_only = ON")
            self.schema_version = self._checked_version()
            return
        # WAL lets searches read while an index run writes; the timeout rides out brief locks.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _checked_version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ClipcliError(
                f"{self.path}: catalog schema {version} is newer than this clipcli understands",
                hint="upgrade clipcli",
            )
        return version

    @property
    def is_blank(self) -> bool:
        """Whether the file holds no catalog yet (an empty file, opened read-only)."""
        return self.schema_version == 0

    def _migrate(self) -> None:
        """Bring the schema up to date: a new catalog at once, an older one in a transaction
        that only the first write commits.

        A run that fails, or finds nothing to change, thus leaves an older catalog exactly as
        it was, still readable by the clipcli version that wrote it. (A new catalog that a
        failed run made is removed by the index run itself.)
        """
        version = self._checked_version()
        if version < SCHEMA_VERSION:
            self._db.execute("BEGIN IMMEDIATE")
            for number in range(version, SCHEMA_VERSION):
                for statement in statements(MIGRATIONS[number]):
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if version == 0:
                self._db.execute("COMMIT")
        self.schema_version = SCHEMA_VERSION

    # -- metadata -------------------------------------------------------------------------------

    @_reported
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def catalog_id(self) -> str:
        return self.get_meta("catalog_id") or ""

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def _bump(self) -> None:
        self._set_meta("generation", str(self.generation + 1))

    @_reported
    def model(self) -> RecordedModel | None:
        """The model the vectors were made with, or None for a fresh catalog."""
        name = self.get_meta("model")
        return None if name is None else RecordedModel(name, self.get_meta("pretrained") or None)

    @_reported
    def weights(self) -> str | None:
        """The content id of the checkpoint file the vectors were made with, if they were made
        from one (catalogs of older clipcli versions do not record it)."""
        return self.get_meta("weights") or None

    @_reported
    def layout(self) -> str:
        """How the user asked for the FAISS index to be laid out ("auto" unless asked)."""
        return self.get_meta("layout") or "auto"

    @_reported
    def set_layout(self, layout: str) -> None:
        """Remember the asked-for layout. Not a new generation: the vectors are the same."""
        with self._transaction():
            self._set_meta("layout", layout)

    @_reported
    def set_model(self, name: str, pretrained: str | None, weights: str | None = None) -> None:
        """Record the model: its name, its weights' tag or last path, their content id."""
        with self._transaction():
            self._set_meta("model", name)
            self._set_meta("pretrained", pretrained or "")
            self._set_meta("weights", weights or "")

    # -- reads ----------------------------------------------------------------------------------

    @_reported
    def entries(self) -> dict[str, CatalogEntry]:
        rows = self._db.execute("SELECT id, path, size, mtime_ns, sha256 FROM images")
        entries = (CatalogEntry(id_, path_from(path), *rest) for id_, path, *rest in rows)
        return {entry.path: entry for entry in entries}

    @_reported
    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    @_reported
    def unreadable(self) -> dict[str, Unreadable]:
        """Files known not to decode, by path."""
        rows = self._db.execute("SELECT path, size, mtime_ns, reason FROM unreadable")
        return {path_from(path): Unreadable(*rest) for path, *rest in rows}

    @_reported
    def embedding_for_hash(self, sha256: str) -> Embeddings | None:
        row = self._db.execute(
            "SELECT embedding FROM images WHERE sha256 = ? LIMIT 1", (sha256,)
        ).fetchone()
        return from_blob(row[0]) if row else None

    @_reported
    def vector_blocks(self, size: int) -> Iterator[tuple[np.ndarray, Embeddings]]:
        """(ids, embeddings) in id order, `size` photos at a time: all of them, without
        holding them all at once."""
        after = -1
        while True:
            rows = self._db.execute(
                "SELECT id, embedding FROM images WHERE id > ? ORDER BY id LIMIT ?", (after, size)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, np.stack([from_blob(r[1]) for r in rows])
            after = int(ids[-1])

    @_reported
    def vector_size(self) -> int:
        """How many numbers each stored vector holds (0 while none is stored)."""
        row = self._db.execute("SELECT embedding FROM images LIMIT 1").fetchone()
        return len(from_blob(row[0])) if row else 0

    @_reported
    def vectors_for(self, ids: Sequence[int]) -> dict[int, Embeddings]:
        """The embeddings of these ids (those that exist), by id."""
        found: dict[int, Embeddings] = {}
        for chunk in catalog_hashes.id_chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id, embedding FROM images WHERE id IN ({marks})", chunk
            )
            found.update((id_, from_blob(blob)) for id_, blob in rows)
        return found

    @_reported
    def vectors(self, changed_after: int | None = None) -> tuple[np.ndarray, Embeddings]:
        """(ids, embeddings) in id order: all of them, or those written after a generation."""
        query, args = "SELECT id, embedding FROM images ORDER BY id", ()
        if changed_after is not None:
            query = "SELECT id, embedding FROM images WHERE changed > ? ORDER BY id"
            args = (changed_after,)
        rows = self._db.execute(query, args).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, np.stack([from_blob(r[1]) for r in rows])

    def outdated(self, indexed: np.ndarray, changed: np.ndarray) -> np.ndarray:
        """Of the ids a vector index holds (`indexed`), those it must drop to match the catalog:
        those written again since (`changed`, as vectors(changed_after=...) gives them) and
        those gone from it. The catalog's ids are read only when some are gone."""
        stale = changed[np.isin(changed, indexed)]
        if len(indexed) + len(changed) - len(stale) != self.count():
            stale = np.union1d(stale, np.setdiff1d(indexed, self.ids()))
        return stale

    @_reported
    def ids(self) -> np.ndarray:
        rows = self._db.execute("SELECT id FROM images ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    @_reported
    def filtered_ids(
        self,
        *,
        under: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
        extensions: Collection[str] = (),
    ) -> np.ndarray:
        """The ids (int64, sorted) of the photos that every filter given keeps; all of them
        when none is given.

        - `under`: folders (absolute paths); a photo is under one when its path begins with
          the folder and a separator, so `/a/b` keeps `/a/b/c.jpg` and `/a/b/d/e.jpg`, never
          `/a/bc/f.jpg`. Any of them will do.
        - `since`, `until`: bounds, both inclusive, on when the photo was taken, in wall-clock
          seconds as clipcli.media.taken counts them: a clock reading as if it were UTC, for
          EXIF dates name no time zone. Turn a date into one with taken.wall_seconds, so that
          a day means the same calendar day as the camera's. A photo whose date was never
          read (a catalog the index run has not dated yet) counts as taken at its file's
          modification time, as this machine's clock showed it.
        - `extensions`: file types without the dot (`jpg`, `png`); a photo is kept when its
          file name ends in a dot and one of them, ASCII letters in any case (`.JPG`).

        Paths stored as bytes (not UTF-8) are filtered alike. Each filter reads an index of
        the catalog, not its rows (catalog_filters).
        """
        return catalog_filters.filtered_ids(
            self._db,
            self.schema_version,
            under=under,
            since=since,
            until=until,
            extensions=extensions,
        )

    @_reported
    def roots(self) -> list[Root]:
        """The folders index runs were given, sorted; none for a catalog of an older schema
        (opened read-only), whose next index run records them."""
        if self.schema_version < DATED_SCHEMA:
            return []
        return catalog_roots.roots(self._db)

    @_reported
    def photos_under(self, folders: Sequence[str]) -> list[int]:
        """How many photos lie under each folder."""
        return [len(self.filtered_ids(under=[folder])) for folder in folders]

    @_reported
    def set_root(self, path: str, excludes: Sequence[str] | None = None) -> None:
        """Record a root; `excludes` replaces its exclude patterns, None keeps them."""
        with self._transaction():
            catalog_roots.set_root(self._db, path, excludes)

    @_reported
    def drop_root(self, path: str) -> None:
        with self._transaction():
            catalog_roots.drop_root(self._db, path)

    @_reported
    def move_root(self, old: str, new: str) -> int:
        """Re-point root `old`, and every photo under it, at `new`; how many photos moved.
        Ids and vectors stay, so the FAISS index needs no change."""
        with self._transaction():
            return catalog_roots.move_root(self._db, old, new)

    @_reported
    def undated(self) -> list[Undated]:
        """Entries whose date was never read: added before dates were recorded, or without one."""
        rows = self._db.execute("SELECT id, path, mtime_ns FROM images WHERE taken_at IS NULL")
        return [Undated(id_, path_from(path), mtime_ns) for id_, path, mtime_ns in rows]

    @_reported
    def entries_for(self, ids: Sequence[int]) -> dict[int, HashedEntry]:
        """The entries of these ids, with their picture hashes, by id."""
        return catalog_hashes.entries_for(self._db, self.schema_version, ids)

    @_reported
    def dates_for(self, ids: Sequence[int]) -> dict[int, float | None]:
        """When each of these photos was taken, by id: None where no date is known, and for
        every photo of a catalog from before dates were recorded (opened read-only)."""
        found: dict[int, float | None] = dict.fromkeys(int(id_) for id_ in ids)
        if self.schema_version < DATED_SCHEMA:
            return found
        for chunk in catalog_hashes.id_chunks(ids):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, taken_at FROM images WHERE id IN ({marks})"
            found.update(self._db.execute(query, chunk).fetchall())
        return found

    @_reported
    def exact_copies(self) -> list[list[int]]:
        """The ids of photos whose files have one content (SHA-256), a sorted list each."""
        return catalog_hashes.exact_copies(self._db)

    @_reported
    def unhashed(self) -> list[Unhashed]:
        """Entries whose picture hash was never computed (added before hashes were)."""
        return catalog_hashes.unhashed(self._db, self.schema_version)

    @_reported
    def picture_hash_for(self, sha256: str) -> PictureHash | None:
        """The picture hash of a photo with this content already indexed, if it has one."""
        return catalog_hashes.hash_for_content(self._db, sha256)

    @_reported
    def paths_for(self, ids: Sequence[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for chunk in catalog_hashes.id_chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT id, path FROM images WHERE id IN ({marks})", chunk)
            found.update((id_, path_from(path)) for id_, path in rows)
        return found

    # -- writes ---------------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    @_reported
    def add(self, images: Iterable[NewImage]) -> None:
        """Insert or replace by path, in one transaction: a killed run loses at most this batch."""
        now = time.time()
        rows = [
            (
                path_value(i.path),
                i.size,
                i.mtime_ns,
                i.sha256,
                to_blob(i.embedding),
                now,
                i.taken_at,
                *catalog_hashes.picture_columns(i.picture),
            )
            for i in images
        ]
        self._write_images(
            "INSERT INTO images (path, size, mtime_ns, sha256, embedding, indexed_at, taken_at,"
            " phash, colours, changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (path) DO UPDATE SET"
            " size = excluded.size, mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256,"
            " embedding = excluded.embedding, indexed_at = excluded.indexed_at,"
            " taken_at = excluded.taken_at, phash = excluded.phash, colours = excluded.colours,"
            " changed = excluded.changed",
            rows,
        )

    @_reported
    def restore(self, images: Sequence[StoredImage]) -> None:
        """Insert rows copied from another catalog, ids included, in one transaction.

        A path that is here already keeps the row that came first: two rows of one catalog
        share a path only when damage changed one of them, and which one cannot be told.
        """
        rows = [
            (
                i.id,
                path_value(i.path),
                i.size,
                i.mtime_ns,
                i.sha256,
                i.embedding,
                i.indexed_at,
                i.taken_at,
                *catalog_hashes.picture_columns(i.picture),
            )
            for i in images
        ]
        self._write_images(
            "INSERT OR IGNORE INTO images (id, path, size, mtime_ns, sha256, embedding,"
            " indexed_at, taken_at, phash, colours, changed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _write_images(self, statement: str, rows: Sequence[tuple[object, ...]]) -> None:
        """`statement` for each row, the new generation as its last value, in one transaction
        that also records that generation; nothing at all for no rows."""
        if not rows:
            return
        with self._transaction():
            generation = self.generation + 1
            self._db.executemany(statement, [(*row, generation) for row in rows])
            self._set_meta("generation", str(generation))

    @_reported
    def date(self, dates: Sequence[Dated]) -> None:
        """Record when entries' photos were taken, in one transaction. Not a new generation:
        the FAISS index holds no dates."""
        if not dates:
            return
        with self._transaction():
            self._db.executemany(
                "UPDATE images SET taken_at = ? WHERE id = ?",
                [(taken_at, id_) for id_, taken_at in dates],
            )

    @_reported
    def set_picture_hashes(self, hashes: Sequence[Hashed]) -> None:
        """Record the picture hashes of entries' pixels, in one transaction. Not a new
        generation: the FAISS index holds no hashes."""
        if not hashes:
            return
        with self._transaction():
            catalog_hashes.set_hashes(self._db, hashes)

    @_reported
    def move(self, moves: Sequence[Move]) -> None:
        """Give entries new paths and stats, keeping their vectors, dates and hashes (the
        content is the same)."""
        if not moves:
            return
        with self._transaction():
            self._db.executemany(
                "UPDATE images SET path = ?, size = ?, mtime_ns = ? WHERE id = ?",
                [(path_value(path), size, mtime, id_) for id_, path, size, mtime in moves],
            )
            self._bump()

    @_reported
    def touch(self, stats: Sequence[Touch]) -> None:
        """Record new stats for files whose content did not change; their dates and hashes
        stay."""
        if not stats:
            return
        with self._transaction():
            self._db.executemany(
                "UPDATE images SET size = ?, mtime_ns = ? WHERE id = ?",
                [(size, mtime, id_) for id_, size, mtime in stats],
            )

    @_reported
    def set_unreadable(self, failures: Sequence[UnreadableFile]) -> None:
        """Remember the files that did not decode, with their stats and why."""
        rows = [(path_value(path), *rest) for path, *rest in failures]
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO unreadable VALUES (?, ?, ?, ?)", rows)

    @_reported
    def forget_unreadable(self, keep: set[str]) -> None:
        """Drop the records of unreadable files except those still present and still bad."""
        stale = [(path_value(p),) for p in self.unreadable() if p not in keep]
        with self._transaction():
            self._db.executemany("DELETE FROM unreadable WHERE path = ?", stale)

    @_reported
    def remove(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._transaction():
            self._db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in ids])
            self._bump()

    @_reported
    def clear(self) -> None:
        """Forget every image, every root and the model (for --reset)."""
        with self._transaction():
            self._db.execute("DELETE FROM images")
            self._db.execute("DELETE FROM unreadable")
            self._db.execute("DELETE FROM roots")
            self._db.execute("DELETE FROM meta WHERE key IN ('model', 'pretrained', 'weights')")
            self._bump()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        if not self._db.in_transaction:  # else the schema upgrade is pending: commit it too
            self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not exc_type:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:  # SQLite itself ends it on some errors (a full disk)
            self._db.execute("ROLLBACK")
