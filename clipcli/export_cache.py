"""Where exported towers live: one folder per model fingerprint, its export.json, its lock.

export.json records what the export found: the pixel transform, the text tower's checks, and,
per CPU, each image backend's agreement with torch and its speed (tower_checks.py). Beside the
graphs lie the calibration pixels and torch fp32's embeddings of them, which those checks
compare against. A folder of another layout, or one whose files were pruned, is emptied and
exported again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcli import locks
from clipcli.onnx_sessions import optimised_path, weights_path
from clipcli.settings import cache_dir

if TYPE_CHECKING:
    from clipcli.models import ModelSpec

# What the files of an export folder look like; a folder of another layout is exported again.
LAYOUT = 5
CALIBRATION_FILE = "calibration.npy"  # pixels, [n, 3, size, size] float32
REFERENCE_FILE = "reference.npy"  # torch fp32's unit embeddings of them, [n, dim] float32


@dataclass(frozen=True)
class ExportFolder:
    """Where one model's exported towers live."""

    path: Path

    @classmethod
    def for_spec(cls, spec: ModelSpec) -> ExportFolder:
        digest = hashlib.sha256(spec.fingerprint.encode()).hexdigest()[:20]
        return cls(cache_dir() / "onnx" / digest)

    def tower(self, name: str) -> Path:
        return self.path / f"{name}.onnx"

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
            f"image-int8-{record['int8']['variant']}"
            for record in meta.get("cpus", {}).values()
            if "variant" in record.get("int8", {})
        ]
        calibration = [self.path / CALIBRATION_FILE, self.path / REFERENCE_FILE]
        return all(self.graph_saved(self.tower(name)) for name in towers) and (
            not meta.get("image_exported") or all(path.is_file() for path in calibration)
        )

    def save_calibration(self, pixels: np.ndarray, reference: np.ndarray) -> None:
        for name, array in ((CALIBRATION_FILE, pixels), (REFERENCE_FILE, reference)):
            tmp = self.path / f".{name}.tmp"
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array, dtype=np.float32))
            os.replace(tmp, self.path / name)

    def calibration(self) -> tuple[np.ndarray, np.ndarray]:
        """(pixels, torch fp32's embeddings of them) that backends are checked against."""
        return np.load(self.path / CALIBRATION_FILE), np.load(self.path / REFERENCE_FILE)

    @contextlib.contextmanager
    def writing(self) -> Iterator[dict[str, Any]]:
        """Exclusive use for exporting; yields the recorded meta.

        A second process waits here, then finds the work done. The files of an older layout, or
        of an export whose graphs were pruned, are removed first: they are several hundred MB
        and nothing can use them.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with locks.exclusive(self.path.parent / f"{self.path.name}.lock", wait=True):
            meta = self.read_meta()
            if not meta or not self.graphs_present(meta):
                for old in self.path.iterdir():
                    old.unlink()
                self.update_meta()
                meta = self.read_meta()
            yield meta
