"""Weights files known by their content, so that weights that move or are touched stay the same.

A checkpoint's identity is the SHA-256 of its bytes. Exports, label embeddings and an index's
record of its model are keyed on it: a file copied to another folder, or touched without
changing, keeps its 600 MB export, and an index finds its weights again after they moved.
Hashing a 600 MB checkpoint takes about half a second, so each file's hash is remembered per
(path, size, mtime) in the cache folder; an everyday run reads it back in a millisecond.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from clipcli.settings import cache_dir

HASHES_FILE = "weights-hashes.json"
PREFIX = "sha256:"
CHUNK = 1 << 20


def content_id(path: str) -> str:
    """'sha256:<hex>' of the file at `path` (which must exist)."""
    stat = os.stat(path)
    return _content_id(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _content_id(path: str, size: int, mtime_ns: int) -> str:
    remembered = _read_hashes()
    entry = remembered.get(path)
    if entry and entry[:2] == [size, mtime_ns]:
        return str(entry[2])
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    found = PREFIX + digest.hexdigest()
    _remember(path, [size, mtime_ns, found])
    return found


def _hashes_path() -> Path:
    return cache_dir() / HASHES_FILE


def _read_hashes() -> dict[str, list]:
    try:
        data = json.loads(_hashes_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(path: str, entry: list) -> None:
    """Add one file's hash; the cache is only an optimisation, so a failed write is ignored."""
    target = _hashes_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        hashes = {p: e for p, e in _read_hashes().items() if os.path.exists(p)}
        hashes[path] = entry
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(hashes))
        os.replace(tmp, target)
    except OSError:
        pass
