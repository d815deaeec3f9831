"""The roots of a catalog: the folders its index runs were given, with their exclude patterns.

A root is kept as its absolute path, as the photos under it are; moving one rewrites the paths
under it in the same transaction, so every reader sees the photos at their old place or all at
their new one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from clipcli.store.catalog_records import path_from, path_value


@dataclass(frozen=True)
class Root:
    path: str
    excludes: tuple[str, ...] = ()


def roots(db: sqlite3.Connection) -> list[Root]:
    rows = db.execute("SELECT path, excludes FROM roots").fetchall()
    found = [Root(path_from(path), tuple(_patterns(excludes))) for path, excludes in rows]
    return sorted(found, key=lambda root: root.path)


def set_root(db: sqlite3.Connection, path: str, excludes: Sequence[str] | None) -> None:
    """Record `path` as a root; `excludes` replaces its patterns, None keeps those it has."""
    db.execute("INSERT OR IGNORE INTO roots (path) VALUES (?)", (path_value(path),))
    if excludes is not None:
        db.execute(
            "UPDATE roots SET excludes = ? WHERE path = ?",
            (json.dumps(list(excludes)), path_value(path)),
        )


def drop_root(db: sqlite3.Connection, path: str) -> None:
    db.execute("DELETE FROM roots WHERE path = ?", (path_value(path),))


def move_root(db: sqlite3.Connection, old: str, new: str) -> int:
    """Re-point root `old` and every path under it at `new`; how many photos moved."""
    moved = 0
    for table, key in (("images", "id"), ("unreadable", "path")):
        rows = db.execute(f"SELECT {key}, path FROM {table}").fetchall()
        changes = [
            (path_value(new + path[len(old) :]), row_key)
            for row_key, path in ((k, path_from(v)) for k, v in rows)
            if path.startswith(os.path.join(old, ""))
        ]
        db.executemany(f"UPDATE {table} SET path = ? WHERE {key} = ?", changes)
        if table == "images":
            moved = len(changes)
    db.execute("UPDATE roots SET path = ? WHERE path = ?", (path_value(new), path_value(old)))
    return moved


def _patterns(stored: str) -> list[str]:
    try:
        patterns = json.loads(stored)
    except ValueError:
        return []
    return [p for p in patterns if isinstance(p, str)] if isinstance(patterns, list) else []
