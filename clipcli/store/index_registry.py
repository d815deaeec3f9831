"""The indexes clipcli knows of, so that cleaning the caches keeps what they still need.

Every successful `clipcli index` adds its folder (an absolute path) to a small JSON list in the
per-user data folder; a folder that no longer holds a catalog is dropped from it when it is read.
The default index (or CLIPCLI_INDEX) counts as known too, registered or not, since it may have
been made before the list existed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from clipcli import locks
from clipcli.models.names import ModelSpec
from clipcli.settings import index_dir, known_indexes_file
from clipcli.store.catalog import CATALOG_FILE


def register(folder: Path) -> None:
    """Remember `folder` as an index. A registry that cannot be written is no reason to fail
    the index run that has just succeeded: cache clean-up then only keeps less."""
    path = os.path.abspath(folder)
    with contextlib.suppress(OSError), _locked():
        registered = _read()
        if path not in registered:
            _write([*registered, path])


def known_indexes() -> list[Path]:
    """The index folders that still hold a catalog: the registered ones, in the order they were
    first indexed, then the default index if it is not among them."""
    registered = _read()
    alive = [path for path in registered if _holds_catalog(path)]
    if len(alive) < len(registered):
        with contextlib.suppress(OSError), _locked():
            # Read again under the lock: another run may have registered a folder meanwhile.
            _write([path for path in _read() if _holds_catalog(path)])
    default = os.path.abspath(index_dir())
    if default not in alive and _holds_catalog(default):
        alive.append(default)
    return [Path(path) for path in alive]


def indexed_model(folder: Path) -> ModelSpec | None:
    """The model an index's catalog records (name, weights tag or last path, and the weights'
    content id), read without changing its folder; None when it records none or cannot be
    read. With the content id, the export of weights that moved is still the index's.

    A read-only connection to a WAL catalog creates its -wal and -shm files if they are missing
    and cannot remove them when it closes. Where they are missing no writer is at work, and the
    file is read as immutable, which creates nothing; where they are there, they are used.
    """
    catalog = Path(os.path.abspath(folder)) / CATALOG_FILE
    uri = f"{catalog.as_uri()}?mode=ro"
    if not (Path(f"{catalog}-wal").exists() and Path(f"{catalog}-shm").exists()):
        uri += "&immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            meta = dict(
                db.execute(
                    "SELECT key, value FROM meta WHERE key IN ('model', 'pretrained', 'weights')"
                )
            )
        finally:
            db.close()
    except sqlite3.Error:
        return None
    model = meta.get("model")
    if not model:
        return None
    return ModelSpec(model, meta.get("pretrained") or None, meta.get("weights") or None)


def _holds_catalog(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CATALOG_FILE))


def _read() -> list[str]:
    """The registered paths; none when the file is missing or damaged."""
    try:
        data = json.loads(known_indexes_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = data.get("indexes") if isinstance(data, dict) else None
    return [path for path in found if isinstance(path, str)] if isinstance(found, list) else []


def _write(paths: list[str]) -> None:
    # ensure_ascii: a folder name that is not UTF-8 (lone surrogates in Python) is written as
    # \udcXX escapes, which read back as the same path.
    file = known_indexes_file()
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(json.dumps({"indexes": paths}, indent=2, ensure_ascii=True) + "\n")
    os.replace(tmp, file)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One writer of the registry at a time: two index runs that finish together both count."""
    file = known_indexes_file()
    with locks.exclusive(file.with_name(f"{file.name}.lock"), wait=True):
        yield
