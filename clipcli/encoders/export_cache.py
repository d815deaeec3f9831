"""Where exported towers live: one folder per model fingerprint, its export.json, its lock.

export.json records what the export found: the pixel transform, the text tower's checks, and,
per CPU, each image backend's agreement with torch and its speed (tower_checks.py). Beside the
graphs lie the calibration pixels and torch fp32's embeddings of them, which those checks
compare against. A folder of another layout, or one whose files were pruned, is emptied and
exported again. export.json also names the model, weights and fingerprint the folder was made
for, and a stamp file's mtime says when the export was last used, so that `clipcli cache` can
tell people what each folder is and clean-up can remove the least recently used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcli import locks
from clipcli.encoders.onnx_sessions import optimised_path, weights_path
from clipcli.settings import cache_dir, cache_limit

if TYPE_CHECKING:
    from clipcli.models.names import ModelSpec

# What the files of an export folder look like; a folder of another layout is exported again.
LAYOUT = 6
CALIBRATION_FILE = "calibration.npy"  # pixels, [n, 3, size, size] float32
REFERENCE_FILE = "reference.npy"  # torch fp32's unit embeddings of them, [n, dim] float32
QUERIES_FILE = "captions.npy"  # torch fp32's unit embeddings of captions, [m, dim] float32
USED_STAMP = "used.stamp"  # its mtime: when the export was last used
# A run that opens an export touches the stamp at most this often: "last used" is for cleaning
# up after days and weeks, and a search should not pay a write for it each time.
MARK_USED_EVERY_S = 3600


@dataclass(frozen=True)
class ExportFolder:
    """Where one model's exported towers live."""

    path: Path
    # The model, weights and fingerprint the folder is for, recorded in export.json when it is
    # written (for_spec knows them; a folder found on disk does not).
    made_for: dict[str, str | None] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def for_spec(cls, spec: ModelSpec) -> ExportFolder:
        fingerprint = spec.fingerprint
        digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:20]
        made_for = {"model": spec.name, "pretrained": spec.pretrained, "fingerprint": fingerprint}
        return cls(cache_dir() / "onnx" / digest, made_for)

    def tower(self, name: str) -> Path:
        """The path of an exported graph. Every run that opens one asks for it here, so this is
        where the export is marked as used."""
        self.mark_used()
        return self.path / f"{name}.onnx"

    @property
    def lock_file(self) -> Path:
        return self.path.parent / f"{self.path.name}.lock"

    def mark_used(self) -> None:
        """Touch the stamp that says when the export was last used, if it is over an hour old.

        Costs one stat when it is recent. Never creates the folder, and never fails: a cache
        that cannot be written to is still one that can be read.
        """
        stamp = self.path / USED_STAMP
        try:
            if time.time() - stamp.stat().st_mtime < MARK_USED_EVERY_S:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return
        with contextlib.suppress(OSError):
            stamp.touch()

    def last_used(self) -> float:
        """When the export was last used or written: the newest mtime of its files, the stamp's
        among them (0 for a folder that is gone)."""
        return max((stat.st_mtime for stat in _file_stats(self.path)), default=0.0)

    def size(self) -> int:
        """Bytes its files take."""
        return sum(stat.st_size for stat in _file_stats(self.path))

    def busy(self) -> bool:
        """Whether another process holds the folder's lock (is exporting into it)."""
        if not self.lock_file.exists():
            return False
        try:
            with locks.exclusive(self.lock_file, wait=False):
                return False
        except locks.Busy:
            return True

    def remove_unless_busy(self) -> bool:
        """Delete the folder, unless another process is writing it (False then).

        The lock file beside it stays: another process may have it open, waiting for its turn,
        and would then lock a file no newcomer sees. It is empty.
        """
        try:
            with locks.exclusive(self.lock_file, wait=False):
                shutil.rmtree(self.path)
        except locks.Busy:
            return False
        except FileNotFoundError:
            pass  # already gone
        return True

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.json"

    def read_meta(self) -> dict[str, Any]:
        """What the export recorded; nothing for a folder of an older layout."""
        try:
            meta = json.loads((self.path / "export.json").read_text())
        except (OSError, ValueError):
            return {}
        return meta if meta.get("layout") == LAYOUT else {}

    def recorded_identity(self) -> dict[str, str | None]:
        """The model, weights and fingerprint export.json names, whatever its layout; each None
        where it names none (folders written before it recorded them)."""
        try:
            meta = json.loads((self.path / "export.json").read_text())
        except (OSError, ValueError):
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        return {
            key: value if isinstance(value := meta.get(key), str) else None
            for key in ("model", "pretrained", "fingerprint")
        }

    def update_meta(self, **values: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        meta = {**self.read_meta(), **values, "layout": LAYOUT}
        tmp = self.path / ".export.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, self.path / "export.json")

    def graph_saved(self, tower: Path) -> bool:
        """Whether the optimised graph of `tower` and its weights are both on disk."""
        return optimised_path(tower).is_file() and weights_path(tower).is_file()

    def remove_graph(self, tower: Path) -> None:
        for path in (optimised_path(tower), weights_path(tower)):
            path.unlink(missing_ok=True)

    def graphs_present(self, meta: dict[str, Any]) -> bool:
        """Whether every file `meta` speaks of is still on disk (caches get pruned)."""
        towers = ["image-fp32"] if meta.get("image_exported") else []
        towers += ["text-fp32"] if meta.get("text_ok") else []
        towers += [
            record["int8"]["graph"]
            for record in meta.get("cpus", {}).values()
            if "graph" in record.get("int8", {})
        ]
        calibration = [
            self.path / name for name in (CALIBRATION_FILE, REFERENCE_FILE, QUERIES_FILE)
        ]
        return all(self.graph_saved(self.tower(name)) for name in towers) and (
            not meta.get("image_exported") or all(path.is_file() for path in calibration)
        )

    def save_calibration(
        self, pixels: np.ndarray, reference: np.ndarray, queries: np.ndarray
    ) -> None:
        saved = ((CALIBRATION_FILE, pixels), (REFERENCE_FILE, reference), (QUERIES_FILE, queries))
        for name, array in saved:
            tmp = self.path / f".{name}.tmp"
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array, dtype=np.float32))
            os.replace(tmp, self.path / name)

    def calibration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pixels, torch fp32's embeddings of them, torch fp32's embeddings of the calibration
        captions) that backends are checked against."""
        return tuple(  # type: ignore[return-value]
            np.load(self.path / name) for name in (CALIBRATION_FILE, REFERENCE_FILE, QUERIES_FILE)
        )

    @contextlib.contextmanager
    def writing(self) -> Iterator[dict[str, Any]]:
        """Exclusive use for exporting; yields the recorded meta.

        A second process waits here, then finds the work done. The files of an older layout, or
        of an export whose graphs were pruned, are removed first: they are several hundred MB
        and nothing can use them.
        """
        limit = cache_limit()  # a CLIPCLI_CACHE_LIMIT that is not a size fails before the work
        with locks.exclusive(self.lock_file, wait=True):
            # Made under the lock: a `clipcli cache clean` may have removed it while we waited.
            self.path.mkdir(parents=True, exist_ok=True)
            meta = self.read_meta()
            if not meta or not self.graphs_present(meta):
                for old in self.path.iterdir():
                    old.unlink()
                self.update_meta(**(self.made_for or {}))
                meta = self.read_meta()
            elif self.made_for and not self.made_for.keys() <= meta.keys():
                self.update_meta(**self.made_for)  # made before export.json named its model
                meta = self.read_meta()
            before = self.size()
            yield meta
            grew = self.size() > before
        if grew:  # something was exported: keep the cache within CLIPCLI_CACHE_LIMIT
            enforce_limit(limit, keep=self)


def _file_stats(folder: Path) -> list[os.stat_result]:
    """The stats of the files in an export folder (it has no subfolders); none if it is gone."""
    stats = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):  # a file renamed or removed meanwhile
                    if entry.is_file(follow_symlinks=False):
                        stats.append(entry.stat(follow_symlinks=False))
    except OSError:
        pass
    return stats


def export_folders() -> list[ExportFolder]:
    """Every export folder in the cache, in name order."""
    root = cache_dir() / "onnx"
    try:
        return [ExportFolder(path) for path in sorted(root.iterdir()) if path.is_dir()]
    except OSError:
        return []


def enforce_limit(limit: int | None, keep: ExportFolder) -> list[Path]:
    """Remove the least recently used export folders until all of them take at most `limit`
    bytes; returns the folders removed.

    Called after `keep` was written, which is never removed, nor is a busy folder. Exports of
    models no known index uses go first; an index's export goes only when the others cannot
    bring the cache under the limit (it is made again the next time that index needs it).
    Never fails: it runs at the end of an export, which has succeeded.
    """
    if limit is None:
        return []
    folders = export_folders()
    sizes = {folder.path: folder.size() for folder in folders}
    total = sum(sizes.values())
    if total <= limit:
        return []
    indexed = exports_in_use()
    others = [folder for folder in folders if folder.path != keep.path]
    others.sort(key=lambda folder: (folder.path in indexed, folder.last_used()))
    removed = []
    for folder in others:
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            if folder.remove_unless_busy():
                total -= sizes[folder.path]
                removed.append(folder.path)
    return removed


def exports_in_use() -> set[Path]:
    """The export folders of the models the known indexes were built with."""
    from clipcli.store import index_registry  # reads the indexes' catalogs: only when evicting

    specs = map(index_registry.indexed_model, index_registry.known_indexes())
    return {ExportFolder.for_spec(spec).path for spec in specs if spec is not None}
