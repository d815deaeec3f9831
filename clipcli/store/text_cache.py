"""Text embeddings on disk: labels through their templates, and search queries as typed.

Keyed by model fingerprint, template digest and text, so that a repeated label or query costs
no model run.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from clipcli.vectors import Embeddings


TEXT_CACHE_FILE = "text_embeddings.sqlite3"
# Numbered migrations, as the catalog's: index i brings the cache from schema i to i + 1.
# Append, never edit. The first one also adopts caches made before the schema had a number.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS label_embeddings (
        model TEXT NOT NULL,
        templates TEXT NOT NULL,
        label TEXT NOT NULL,
        embedding BLOB NOT NULL,
        PRIMARY KEY (model, templates, label)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# The cache key standing for "no template": search queries are embedded as typed.
RAW_QUERY = "raw-query"


class TextEmbeddingCache:
    """Text embeddings on disk, keyed by model fingerprint, template digest and text.

    Use as a context manager. A cache of a newer schema than this clipcli knows is left as it
    is, unread: this run keeps its embeddings in memory instead (it is only a cache).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30)
        try:
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    def __enter__(self) -> TextEmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:  # a newer clipcli's: left to it, and a fresh one in memory
            self._db.close()
            self._db = sqlite3.connect(":memory:")
            version = 0
        for number in range(version, SCHEMA_VERSION):
            self._db.executescript(
                f"BEGIN; {MIGRATIONS[number]} PRAGMA user_version = {number + 1}; COMMIT;"
            )

    def get(self, model: str, templates: str, labels: Sequence[str]) -> dict[str, Embeddings]:
        found: dict[str, Embeddings] = {}
        rows = self._db.execute(
            "SELECT label, embedding FROM label_embeddings WHERE model = ? AND templates = ?",
            (model, templates),
        )
        wanted = {_stored_text(label): label for label in labels}
        for stored, blob in rows:
            if stored in wanted:
                found[wanted[stored]] = np.frombuffer(blob, dtype="<f4").copy()
        return found

    def missing(self, model: str, templates: str, labels: Sequence[str]) -> list[str]:
        """The labels of `labels` that have no cached embedding yet."""
        found = self.get(model, templates, labels)
        return [label for label in labels if label not in found]

    def put(self, model: str, templates: str, embeddings: dict[str, Embeddings]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO label_embeddings VALUES (?, ?, ?, ?)",
                [
                    (model, templates, _stored_text(k), v.astype("<f4").tobytes())
                    for k, v in embeddings.items()
                ],
            )

    def models(self) -> dict[str, tuple[int, int]]:
        """Per model fingerprint: how many embeddings are cached, and how many of them are of
        search queries."""
        rows = self._db.execute(
            "SELECT model, count(*), total(templates = ?) FROM label_embeddings GROUP BY model",
            (RAW_QUERY,),
        )
        return {model: (count, int(queries)) for model, count, queries in rows}

    def forget(self, models: Collection[str]) -> int:
        """Delete every embedding of these model fingerprints, and give the file's space back;
        returns how many were deleted."""
        with self._db:
            deleted = sum(
                self._db.execute("DELETE FROM label_embeddings WHERE model = ?", (m,)).rowcount
                for m in models
            )
        if deleted:  # deleted rows only free pages inside the file
            with contextlib.suppress(sqlite3.OperationalError):  # a reader holds it: next time
                self._db.execute("VACUUM")
        return deleted

    def close(self) -> None:
        self._db.close()

    @classmethod
    def default(cls) -> TextEmbeddingCache:
        from clipcli.settings import cache_dir

        return cls(cache_dir() / TEXT_CACHE_FILE)


def _stored_text(text: str) -> str | bytes:
    """A label or query as the cache stores it: as text, or, when it holds bytes that were not
    UTF-8 (typed in a terminal of another encoding, which Python keeps as lone surrogates), as
    bytes, since SQLite takes no such text. SQLite never finds bytes equal to text, so no label
    can be given another's embedding."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text
