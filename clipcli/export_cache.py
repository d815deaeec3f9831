"""Where exported towers live: one folder per model fingerprint, its export.json, its lock.

export.json records what the export found (each backend's agreement with torch and its speed,
the pixel transform, the text tower's checks); a folder of another layout, or one whose graph
files were pruned, is emptied and exported again.
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

from clipcli import locks
from clipcli.onnx_sessions import optimised_path, weights_path
from clipcli.settings import cache_dir

if TYPE_CHECKING:
    from clipcli.models import ModelSpec

# What the files of an export folder look like; a folder of another layout is exported again.
LAYOUT = 4
# The image tower's exported variants: fp32 as exported, int8 dynamically quantised from it.
IMAGE_KINDS = ("fp32", "int8")


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

    def graphs_present(self, meta: dict[str, Any]) -> bool:
        """Whether every graph `meta` speaks of is still on disk (caches get pruned)."""
        names = [f"image-{kind}" for kind in IMAGE_KINDS if f"image_{kind}_rate" in meta]
        names += ["text-fp32"] if meta.get("text_ok") else []
        return all(
            optimised_path(self.tower(name)).is_file() and weights_path(self.tower(name)).is_file()
            for name in names
        )

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
