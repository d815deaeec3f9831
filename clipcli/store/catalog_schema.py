"""The catalog's schema as numbered migrations, and how one is split into statements."""

from __future__ import annotations

import sqlite3

# Numbered migrations: index i brings a catalog from schema version i to i + 1. Append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        embedding BLOB NOT NULL,
        indexed_at REAL NOT NULL
    );
    CREATE INDEX images_sha256 ON images (sha256);
    """,
    # Files that failed to decode, so an unchanged bad file is not decoded again on every run.
    """
    CREATE TABLE unreadable (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    """,
    # A random identity, so files derived from one catalog are never mistaken for another's.
    """
    INSERT INTO meta VALUES ('catalog_id', lower(hex(randomblob(16))));
    """,
    # The generation that last wrote each vector, so the FAISS index can catch up in place.
    """
    ALTER TABLE images ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX images_changed ON images (changed);
    """,
    # Paths that are not UTF-8 are stored as BLOBs of their bytes from here on. Versions before
    # this one read every path as text, so the version bump makes them refuse such a catalog.
    """
    INSERT OR REPLACE INTO meta VALUES ('paths', 'UTF-8 text, else a BLOB of the raw bytes');
    """,
    # When each photo was taken, as wall-clock seconds (clipcli.media.taken), for filtering
    # searches by date; NULL until an index run reads it. The index answers a date range
    # without reading the table, whose rows are mostly vector.
    # And the folders the index is built from (its roots), each with the exclude patterns it
    # was given: a root that cannot be reached (a drive not mounted) keeps its photos, and one
    # that moved is re-pointed. A catalog of an earlier schema learns its roots from the next
    # index run.
    """
    ALTER TABLE images ADD COLUMN taken_at REAL;
    CREATE INDEX images_taken_at ON images (taken_at);
    CREATE TABLE roots (path PRIMARY KEY NOT NULL, excludes TEXT NOT NULL DEFAULT '[]');
    """,
    # The hash of each photo's pixels (clipcli.media.perceptual_hash), which tells copies of
    # one picture from two pictures of one subject that CLIP finds as close: its pHash, as a
    # signed 64-bit integer, and its 4x4 colour grid, 48 bytes (grey levels alone take two
    # drawings of one shape on backgrounds of different colours for one). Both NULL until an
    # index run computes them.
    """
    ALTER TABLE images ADD COLUMN phash INTEGER;
    ALTER TABLE images ADD COLUMN colours BLOB;
    """,
)


SCHEMA_VERSION = len(MIGRATIONS)
DATED_SCHEMA = 6  # the first schema whose images have taken_at, and that has roots
HASHED_SCHEMA = 7  # the first whose images have a picture hash (pHash and colour grid)


def statements(script: str) -> list[str]:
    """The SQL statements of a migration script, split where SQLite says each one ends
    (executescript would commit the upgrade's transaction)."""
    statements, current = [], ""
    for part in script.split(";"):
        current += part + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip())
            current = ""
    return statements
