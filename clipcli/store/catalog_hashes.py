"""The catalog's reads and writes of what tells copies apart: the perceptual hash of each
photo's pixels and the content hash (SHA-256) of its file. Catalog calls these on its own
connection; a catalog of a schema before perceptual hashes (opened read-only) has none."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from itertools import groupby

from clipcli.store.catalog_records import Hashed, HashedEntry, Unhashed, path_from
from clipcli.store.catalog_schema import HASHED_SCHEMA

# SQLite takes at most 999 parameters per statement in older builds, 32,766 in newer.
_PARAMETERS = 999


def entries_for(db: sqlite3.Connection, version: int, ids: Sequence[int]) -> dict[int, HashedEntry]:
    """The entries of these ids (those that exist), by id."""
    phash = "phash" if version >= HASHED_SCHEMA else "NULL"
    found: dict[int, HashedEntry] = {}
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT id, path, size, mtime_ns, sha256, {phash} FROM images WHERE id IN ({marks})",
            chunk,
        )
        found.update((id_, HashedEntry(id_, path_from(path), *rest)) for id_, path, *rest in rows)
    return found


def exact_copies(db: sqlite3.Connection) -> list[list[int]]:
    """The ids of the photos whose files have the same content, a list (sorted) per content;
    read from the content hash's index."""
    rows = db.execute(
        "SELECT sha256, id FROM images WHERE sha256 IN"
        " (SELECT sha256 FROM images GROUP BY sha256 HAVING COUNT(*) > 1) ORDER BY sha256, id"
    )
    return [[id_ for _, id_ in same] for _, same in groupby(rows, key=lambda row: row[0])]


def unhashed(db: sqlite3.Connection, version: int) -> list[Unhashed]:
    """The entries whose perceptual hash was never computed, in id order."""
    where = "WHERE phash IS NULL" if version >= HASHED_SCHEMA else ""
    rows = db.execute(f"SELECT id, path FROM images {where} ORDER BY id")
    return [Unhashed(id_, path_from(path)) for id_, path in rows]


def hash_for_content(db: sqlite3.Connection, sha256: str) -> int | None:
    """The perceptual hash of a photo with this content, if one has it: a copy's own."""
    row = db.execute(
        "SELECT phash FROM images WHERE sha256 = ? AND phash IS NOT NULL LIMIT 1", (sha256,)
    ).fetchone()
    return None if row is None else int(row[0])


def set_hashes(db: sqlite3.Connection, hashes: Sequence[Hashed]) -> None:
    db.executemany("UPDATE images SET phash = ? WHERE id = ?", [(h, id_) for id_, h in hashes])


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _PARAMETERS):
        yield [int(id_) for id_ in ids[start : start + _PARAMETERS]]
