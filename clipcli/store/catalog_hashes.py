"""The catalog's reads and writes of what tells copies apart: the picture hash of each photo's
pixels (its pHash and colour grid, clipcli.media.perceptual_hash) and the content hash
(SHA-256) of its file. Catalog calls these on its own connection; a catalog of a schema before
picture hashes (opened read-only) has none."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from itertools import groupby

from clipcli.media.perceptual_hash import COLOUR_BYTES, PictureHash
from clipcli.store.catalog_records import Hashed, HashedEntry, Unhashed, path_from
from clipcli.store.catalog_schema import HASHED_SCHEMA

# SQLite takes at most 999 parameters per statement in older builds, 32,766 in newer.
_PARAMETERS = 999


def stored_picture(phash: object, colours: object) -> PictureHash | None:
    """The picture hash of a row's two columns, if they hold what clipcli writes (an integer,
    48 bytes); None when not computed yet, or damaged, for an index run to compute again."""
    if isinstance(phash, int) and isinstance(colours, bytes) and len(colours) == COLOUR_BYTES:
        return PictureHash(phash, colours)
    return None


def picture_columns(picture: PictureHash | None) -> tuple[int | None, bytes | None]:
    """The values of the columns phash and colours for a picture hash."""
    return (None, None) if picture is None else (picture.phash, picture.colours)


def entries_for(db: sqlite3.Connection, version: int, ids: Sequence[int]) -> dict[int, HashedEntry]:
    """The entries of these ids (those that exist), by id."""
    hashes = "phash, colours" if version >= HASHED_SCHEMA else "NULL, NULL"
    found: dict[int, HashedEntry] = {}
    for chunk in id_chunks(ids):
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT id, path, size, mtime_ns, sha256, {hashes} FROM images WHERE id IN ({marks})",
            chunk,
        )
        found.update(
            (id_, HashedEntry(id_, path_from(path), size, mtime, sha, stored_picture(*hashed)))
            for id_, path, size, mtime, sha, *hashed in rows
        )
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
    """The entries whose picture hash was never computed, in id order."""
    where = "WHERE phash IS NULL OR colours IS NULL" if version >= HASHED_SCHEMA else ""
    rows = db.execute(f"SELECT id, path FROM images {where} ORDER BY id")
    return [Unhashed(id_, path_from(path)) for id_, path in rows]


def hash_for_content(db: sqlite3.Connection, sha256: str) -> PictureHash | None:
    """The picture hash of a photo with this content, if one has it: a copy's own."""
    row = db.execute(
        "SELECT phash, colours FROM images"
        " WHERE sha256 = ? AND phash IS NOT NULL AND colours IS NOT NULL LIMIT 1",
        (sha256,),
    ).fetchone()
    return None if row is None else stored_picture(*row)


def set_hashes(db: sqlite3.Connection, hashes: Sequence[Hashed]) -> None:
    db.executemany(
        "UPDATE images SET phash = ?, colours = ? WHERE id = ?",
        [(*picture_columns(picture), id_) for id_, picture in hashes],
    )


def id_chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    """The ids as ints, as many at a time as one statement's parameters may be."""
    for start in range(0, len(ids), _PARAMETERS):
        yield [int(id_) for id_ in ids[start : start + _PARAMETERS]]
