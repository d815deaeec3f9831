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


# The cache key standing for "no template": search queries are embedded as typed.
RAW_QUERY = "raw-query"


class TextEmbeddingCache:
    """Text embeddings on disk, keyed by model fingerprint, template digest and text."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS label_embeddings (model TEXT NOT NULL, templates TEXT NOT"
            " NULL, label TEXT NOT NULL, embedding BLOB NOT NULL, PRIMARY KEY (model, templates,"
            " label))"
        )

    def get(self, model: str, templates: str, labels: Sequence[str]) -> dict[str, Embeddings]:
        found: dict[str, Embeddings] = {}
        rows = self._db.execute(
            "SELECT label, embedding FROM label_embeddings WHERE model = ? AND templates = ?",
            (model, templates),
        )
        wanted = set(labels)
        for label, blob in rows:
            if label in wanted:
                found[label] = np.frombuffer(blob, dtype="<f4").copy()
        return found

    def missing(self, model: str, templates: str, labels: Sequence[str]) -> list[str]:
        """The labels of `labels` that have no cached embedding yet."""
        found = self.get(model, templates, labels)
        return [label for label in labels if label not in found]

    def put(self, model: str, templates: str, embeddings: dict[str, Embeddings]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO label_embeddings VALUES (?, ?, ?, ?)",
                [(model, templates, k, v.astype("<f4").tobytes()) for k, v in embeddings.items()],
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
