"""Where `clipcli eval` keeps the image embeddings of each dataset folder: a catalog per folder,
model and backend under the cache folder, with a note of the dataset it belongs to, so that
cleaning the cache can tell which datasets are gone."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from clipcli import locks
from clipcli.settings import cache_dir
from clipcli.store.index_folder import LOCK_FILE

EVAL_CACHE = "eval"
STATE_FILE = "eval.json"


def eval_root() -> Path:
    return cache_dir() / EVAL_CACHE


def folder_for(dataset: Path, fingerprint: str, device: str, precision: str) -> Path:
    """The catalog folder of one dataset folder's embeddings, for one model and backend."""
    key = "\0".join([os.path.abspath(dataset), fingerprint, device, precision])
    return eval_root() / hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def read_state(folder: Path) -> dict[str, Any]:
    """What the last run noted (the dataset's path, the model's logit scale); {} if nothing."""
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Best effort: without the note the next run looks the scale up again, and the cleaner
    takes the embeddings for those of a dataset that is gone."""
    with contextlib.suppress(OSError):
        temporary = folder / f"{STATE_FILE}.part"
        temporary.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temporary, folder / STATE_FILE)


def eval_folders() -> list[Path]:
    root = eval_root()
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_dir())


def dataset_gone(folder: Path) -> bool:
    """Whether the dataset folder these embeddings were made for no longer exists."""
    dataset = read_state(folder).get("dataset")
    return not isinstance(dataset, str) or not os.path.isdir(dataset)


def last_used(folder: Path) -> float:
    """When a run last finished with these embeddings (each run rewrites its note)."""
    for path in (folder / STATE_FILE, folder):
        with contextlib.suppress(OSError):
            return path.stat().st_mtime
    return 0.0


def remove_unless_busy(folder: Path) -> bool:
    """Delete the folder, unless an eval run is writing it (False then)."""
    try:
        with locks.exclusive(folder / LOCK_FILE, wait=False):
            shutil.rmtree(folder)
    except locks.Busy:
        return False
    except FileNotFoundError:
        pass
    return True


def folder_bytes(folder: Path) -> int:
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total
