"""`clipcli import`: a new index from shards, clipcli's own or clip-retrieval's.

Every row becomes a catalog entry with its vector, as `clipcli index` would have stored it, so
that a later `clipcli index DIR` over the same photos finds them unchanged (the same size and
mtime) and embeds nothing: it adds DIR as a root, and back-fills what shards do not carry (the
picture hashes, and the dates of foreign shards). The import records no roots itself: shards
say which files they hold, not which folders were indexed.

Shards of clip-retrieval have no manifest, so `--model` names the model that made them; their
rows carry only image_path, so each file that exists is read for its size, time and hash, and
a row whose file is missing is skipped. Of rows that share an image_path, the last is kept (a
resumed `clipcli embed` writes a changed file again, later).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipcli.encoders.choose import requested_spec
from clipcli.errors import ModelMismatchError, UsageError
from clipcli.media.hashing import file_sha256
from clipcli.models import transformers_folders
from clipcli.models.names import (
    BUNDLED_CONFIG_DIR,
    HF_HUB_PREFIX,
    ModelSpec,
    open_clip_registry,
)
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.shards.arrow import require_pyarrow
from clipcli.shards.layout import ShardRow, model_spec, same_model
from clipcli.shards.reader import ShardSet, metadata_columns, open_shards, read_blocks
from clipcli.shards.skipped import Skipped
from clipcli.store import index_folder, index_registry, vector_index
from clipcli.store.catalog import Catalog
from clipcli.store.catalog_records import NewImage

# Entries written per transaction: a few MB of vectors.
WRITE_BATCH = 4096
# How far a vector's squared length may be from 1 (float16 rounding moves it by ~1e-3).
UNIT_TOLERANCE = 0.05


@dataclass
class ImportReport:
    """What one import did; its fields are the --json contract."""

    index: str
    source: str
    model: str
    added: int = 0
    duplicates: int = 0  # rows left out because a later row has the same image_path
    hashed: int = 0  # rows whose file was read for its size, time and hash
    skipped: list[Skipped] = field(default_factory=list)
    total: int = 0
    seconds: float = 0.0


def import_shards(
    source: Path,
    folder: Path,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    layout: str | None = None,
    progress: ProgressReporter | None = None,
) -> ImportReport:
    """Build the index in `folder`, which must hold no photos, from the shards in `source`,
    laid out as `layout` asks (vector_index.LAYOUTS; None: as the index folder recorded, auto
    at first).

    The model is the manifest's; `model` and `pretrained`, if given, must name the same one
    (ModelMismatchError otherwise), and shards without a manifest need them. A failed import
    leaves the index folder as it found it.
    """
    started = time.perf_counter()
    vector_index.check_layout(layout)
    require_pyarrow()
    shards = open_shards(source)
    if shards.manifest is not None and not shards.manifest.complete:
        raise UsageError(
            f"{source}: an interrupted `clipcli embed` left this set incomplete",
            hint="run the same `clipcli embed` again to finish it, then import",
        )
    if shards.rows == 0:
        raise UsageError(f"{source}: the shards hold no vectors")
    spec = shards_model(shards, model, pretrained)
    check_width(spec, shards)
    last, duplicates = _last_rows(shards)
    report = ImportReport(str(folder), str(source), spec.name, duplicates=duplicates)
    with index_folder.writing(folder), Catalog(folder) as catalog:
        if catalog.count():
            raise UsageError(
                f"{folder}: the index already holds {catalog.count()} photos",
                hint="import into a new --index folder",
            )
        with _undone_on_failure(folder, catalog):
            catalog.set_model(spec.name, spec.pretrained, spec.weights_id)
            _add_rows(shards, last, catalog, progress or NoProgress(), report)
            vector_index.refresh(folder, catalog, layout=layout)
            if layout is not None:
                catalog.set_layout(layout)
        report.total = catalog.count()
    index_registry.register(folder)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def shards_model(shards: ShardSet, model: str | None, pretrained: str | None) -> ModelSpec:
    """The model the shards were made with: the manifest's, checked against --model and
    --pretrained where given; for shards without a manifest, the one those name."""
    manifest = shards.manifest
    if manifest is None:
        if model is None:
            raise UsageError(
                f"{shards.folder}: shards without a clipcli manifest do not say which model "
                "made them",
                hint="give --model (and --pretrained) as they were made, e.g. --model ViT-B-32 "
                "--pretrained openai",
            )
        return requested_spec(model, pretrained)
    recorded = model_spec(manifest.model)
    if model is None and pretrained is None:
        return recorded
    asked = requested_spec(model or recorded.name, pretrained)
    if not same_model(asked, recorded):
        raise ModelMismatchError(
            f"{shards.folder}: the shards were made with {recorded.describe()}, "
            f"not {asked.describe()}",
            hint="leave out --model to import them with their own model",
        )
    return asked  # the same weights, where they are on this machine


def check_width(spec: ModelSpec, shards: ShardSet) -> None:
    """A ModelMismatchError when the vectors are not as wide as the model's embeddings; a
    model whose width cannot be told without the hub (an hf-hub: name) is not checked."""
    width = model_width(spec)
    if width is not None and width != shards.dim:
        raise ModelMismatchError(
            f"{shards.folder}: the vectors have {shards.dim} dimensions, but "
            f"{spec.describe()} makes {width}",
            hint="give the --model that made them",
        )


def model_width(spec: ModelSpec) -> int | None:
    """The model's embedding size, from its config, without loading the weights (nor, for the
    configs open_clip ships and the bundled model's, importing torch)."""
    if spec.from_transformers:
        place = transformers_folders.local_place(spec)
        if place is None or not (place / transformers_folders.CONFIG_FILE).is_file():
            return None
        return transformers_folders.read_folder(place).geometry.embed_dim
    if spec.name.startswith(HF_HUB_PREFIX):
        return None  # its config is on the hub
    for configs in _config_folders():
        path = configs / f"{spec.name}.json"
        if path.is_file():
            return int(json.loads(path.read_text(encoding="utf-8"))["embed_dim"])
    config = open_clip_registry().get_model_config(spec.name)  # one registered at run time
    return int(config["embed_dim"]) if config else None


def _config_folders() -> list[Path]:
    """The bundled model's config folder, and open_clip's own, found without importing it."""
    import importlib.util

    found = importlib.util.find_spec("open_clip")
    folders = [BUNDLED_CONFIG_DIR]
    for location in (found.submodule_search_locations or []) if found else []:
        folders.append(Path(location) / "model_configs")
    return folders


def catalog_path(image_path: str) -> str:
    """How the catalog names the file: absolute, as discovery names it (a relative path is
    taken from the current folder)."""
    return image_path if os.path.isabs(image_path) else os.path.abspath(image_path)


def _last_rows(shards: ShardSet) -> tuple[dict[str, int], int]:
    """Each path's last row (its position in the set), and how many rows a later one replaces."""
    last: dict[str, int] = {}
    named = 0
    for position, (path,) in enumerate(metadata_columns(shards, ["image_path"])):
        if isinstance(path, str) and path:
            last[catalog_path(path)] = position
            named += 1
    return last, named - len(last)


def _add_rows(
    shards: ShardSet,
    last: dict[str, int],
    catalog: Catalog,
    progress: ProgressReporter,
    report: ImportReport,
) -> None:
    """Every row that is its path's last, as an entry, a batch per transaction."""
    progress.phase("Importing", shards.rows)
    batch: list[NewImage] = []
    position = 0
    for block in read_blocks(shards):
        for row, vector in zip(block.rows, block.vectors, strict=True):
            here, position = position, position + 1
            if row is None:
                report.skipped.append(Skipped(f"row {here}", "no image_path"))
            elif last.get(catalog_path(row.image_path)) == here:
                image = _new_image(row, vector, report)
                if image is not None:
                    batch.append(image)
        if len(batch) >= WRITE_BATCH:
            catalog.add(batch)
            report.added += len(batch)
            batch = []
        progress.advance(len(block.rows))
    catalog.add(batch)
    report.added += len(batch)


def _new_image(row: ShardRow, vector: np.ndarray, report: ImportReport) -> NewImage | None:
    """The row as a catalog entry; None, with the reason in the report, where it cannot be."""
    path = catalog_path(row.image_path)
    length = float(np.dot(vector, vector))
    if not abs(length - 1.0) <= UNIT_TOLERANCE:
        report.skipped.append(Skipped(path, f"not a unit vector (squared length {length:.3g})"))
        return None
    if row.sha256 is not None and row.size is not None and row.mtime_ns is not None:
        return NewImage(path, row.size, row.mtime_ns, row.sha256, vector, row.taken_at)
    try:
        stat = os.stat(path)
        sha256 = file_sha256(path)
    except FileNotFoundError:
        reason = "file not found, and the shards give no size, time and hash for it"
        report.skipped.append(Skipped(path, reason))
        return None
    except OSError as exc:
        report.skipped.append(Skipped(path, f"cannot read file ({exc.strerror or exc})"))
        return None
    report.hashed += 1
    return NewImage(path, stat.st_size, stat.st_mtime_ns, sha256, vector, row.taken_at)


@contextlib.contextmanager
def _undone_on_failure(folder: Path, catalog: Catalog) -> Iterator[None]:
    """Forget every photo added when the block fails, so that index_folder.writing removes
    the catalog it made (the index held none before); and the vector index, if made now."""
    made = [
        path
        for path in (folder / vector_index.INDEX_FILE, folder / vector_index.STAMP_FILE)
        if not path.exists()
    ]
    try:
        yield
    except BaseException:
        catalog.clear()
        for path in made:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
