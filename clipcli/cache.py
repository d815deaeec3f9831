"""What clipcli's caches hold, and their clean-up: exported models, cached text embeddings, and
what the views and `clipcli eval` keep (thumbnails, the image embeddings of each dataset).

Both are caches: whatever is removed is made again when next needed (an export needs torch and
a minute or so; label embeddings need the text encoder). Which exports are still wanted is
learnt from the known indexes (index_registry.py), whose catalogs are only ever read.

An export another process is writing is never removed: each removal takes the folder's lock
without waiting and skips the folder when it is held.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from clipcli.encoders.export_cache import ExportFolder, export_folders
from clipcli.media import thumbnails
from clipcli.models.names import ModelSpec
from clipcli.settings import cache_dir, cache_limit
from clipcli.store import eval_cache, index_registry
from clipcli.store.text_cache import TEXT_CACHE_FILE, TextEmbeddingCache

DAY_S = 86400.0


@dataclass(frozen=True)
class ExportInfo:
    """One export folder: what it is for, its size, when it was last used, who needs it."""

    path: str
    model: str | None  # as export.json records them; None for folders made before it did
    pretrained: str | None
    fingerprint: str | None
    bytes: int
    last_used: float  # seconds since the epoch
    indexes: list[str]  # the known indexes whose model it is
    busy: bool  # another process is writing it


@dataclass(frozen=True)
class TextModelInfo:
    """The cached text embeddings of one model."""

    fingerprint: str
    model: str | None  # known when an export or an index names the fingerprint
    pretrained: str | None
    rows: int
    queries: int  # of the rows, those of search queries
    indexes: list[str]


@dataclass(frozen=True)
class CacheReport:
    """What `clipcli cache` shows."""

    cache: str
    limit: int | None  # CLIPCLI_CACHE_LIMIT in bytes; None: no limit
    exports: list[ExportInfo]
    text_cache: str
    text_bytes: int  # 0 where there is no file
    text_models: list[TextModelInfo]
    eval_bytes: int = 0  # the image embeddings `clipcli eval` keeps, of every dataset
    eval_datasets: list[str] = field(default_factory=list)
    thumbnail_bytes: int = 0

    @property
    def exports_bytes(self) -> int:
        return sum(export.bytes for export in self.exports)


@dataclass(frozen=True)
class Removed:
    export: ExportInfo
    reason: str  # "unused": no known index uses it; "stale": not used for --older-than days; "all"


@dataclass(frozen=True)
class NotRemoved:
    path: str
    reason: str


@dataclass
class CleanReport:
    """What `clipcli cache clean` removed, and what it had to leave."""

    removed: list[Removed] = field(default_factory=list)
    skipped: list[NotRemoved] = field(default_factory=list)
    text_rows: int = 0
    text_models: list[str] = field(default_factory=list)  # fingerprints whose rows went
    text_bytes: int = 0  # how much smaller the text cache file became
    eval_datasets: list[str] = field(default_factory=list)  # whose image embeddings went
    eval_bytes: int = 0
    thumbnail_bytes: int = 0

    @property
    def freed(self) -> int:
        exports = sum(removed.export.bytes for removed in self.removed)
        return exports + self.text_bytes + self.eval_bytes + self.thumbnail_bytes


@dataclass(frozen=True)
class _Uses:
    """Which export folders and text-cache fingerprints the known indexes use."""

    exports: dict[Path, list[str]]
    fingerprints: dict[str, list[str]]
    specs: dict[str, ModelSpec]  # by fingerprint


def _index_uses() -> _Uses:
    exports: dict[Path, list[str]] = defaultdict(list)
    fingerprints: dict[str, list[str]] = defaultdict(list)
    specs: dict[str, ModelSpec] = {}
    for folder in index_registry.known_indexes():
        spec = index_registry.indexed_model(folder)
        if spec is None:
            continue  # an empty index, or one that cannot be read: no model to keep
        exports[ExportFolder.for_spec(spec).path].append(str(folder))
        fingerprints[spec.fingerprint].append(str(folder))
        specs[spec.fingerprint] = spec
    return _Uses(exports, fingerprints, specs)


def _describe(folder: ExportFolder, uses: _Uses) -> ExportInfo:
    recorded = folder.recorded_identity()
    return ExportInfo(
        path=str(folder.path),
        model=recorded["model"],
        pretrained=recorded["pretrained"],
        fingerprint=recorded["fingerprint"],
        bytes=folder.size(),
        last_used=folder.last_used(),
        indexes=list(uses.exports.get(folder.path, [])),
        busy=folder.busy(),
    )


def cache_report() -> CacheReport:
    """What the caches hold, and which known index needs what."""
    limit = cache_limit()
    uses = _index_uses()
    exports = [_describe(folder, uses) for folder in export_folders()]
    names = {
        export.fingerprint: (export.model, export.pretrained)
        for export in exports
        if export.fingerprint
    }
    names.update({fp: (spec.name, spec.pretrained) for fp, spec in uses.specs.items()})
    path = cache_dir() / TEXT_CACHE_FILE
    text_models = [
        TextModelInfo(
            fp, *names.get(fp, (None, None)), rows, queries, uses.fingerprints.get(fp, [])
        )
        for fp, (rows, queries) in sorted(_text_rows(path).items())
    ]
    size = path.stat().st_size if path.is_file() else 0
    evals = eval_cache.eval_folders()
    return CacheReport(
        str(cache_dir()),
        limit,
        exports,
        str(path),
        size,
        text_models,
        eval_bytes=sum(eval_cache.folder_bytes(folder) for folder in evals),
        eval_datasets=sorted(_dataset_of(folder) for folder in evals),
        thumbnail_bytes=eval_cache.folder_bytes(thumbnails.thumbnail_root()),
    )


def _dataset_of(folder: Path) -> str:
    dataset = eval_cache.read_state(folder).get("dataset")
    return dataset if isinstance(dataset, str) else str(folder)


def clean(*, older_than_days: float | None = None, everything: bool = False) -> CleanReport:
    """Remove the exports and cached text embeddings of models no known index uses; with
    `older_than_days`, also the exports (and embeddings) of indexed models not used for that
    many days; with `everything`, all of them. Busy exports are skipped; indexes are not
    touched."""
    uses = _index_uses()
    cutoff = None if older_than_days is None else time.time() - older_than_days * DAY_S
    report = CleanReport()
    stale: set[str] = set()
    for folder in export_folders():
        export = _describe(folder, uses)
        reason = _why_remove(export, cutoff, everything)
        if reason is None:
            continue
        try:
            removed = folder.remove_unless_busy()
        except OSError as exc:
            report.skipped.append(NotRemoved(export.path, f"cannot remove it ({exc})"))
            continue
        if not removed:
            report.skipped.append(NotRemoved(export.path, "another clipcli is exporting to it"))
            continue
        report.removed.append(Removed(export, reason))
        if reason == "stale" and export.fingerprint:
            stale.add(export.fingerprint)
    _clean_text_cache(report, uses, stale, everything)
    _clean_eval_embeddings(report, cutoff, everything)
    if everything:
        report.thumbnail_bytes = _remove_tree(thumbnails.thumbnail_root(), report)
    return report


def _clean_eval_embeddings(report: CleanReport, cutoff: float | None, everything: bool) -> None:
    """Those of datasets that are gone; with a cutoff, also those not used since; all with
    `everything`. A dataset being evaluated keeps its own."""
    for folder in eval_cache.eval_folders():
        used = eval_cache.last_used(folder)
        old = cutoff is not None and used < cutoff
        if not (everything or old or eval_cache.dataset_gone(folder)):
            continue
        size, dataset = eval_cache.folder_bytes(folder), _dataset_of(folder)
        try:
            removed = eval_cache.remove_unless_busy(folder)
        except OSError as exc:
            report.skipped.append(NotRemoved(str(folder), f"cannot remove it ({exc})"))
            continue
        if not removed:
            report.skipped.append(NotRemoved(str(folder), "a clipcli eval is writing it"))
            continue
        report.eval_datasets.append(dataset)
        report.eval_bytes += size


def _remove_tree(folder: Path, report: CleanReport) -> int:
    size = eval_cache.folder_bytes(folder)
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        report.skipped.append(NotRemoved(str(folder), f"cannot remove it ({exc})"))
        return 0
    return size


def _clean_text_cache(report: CleanReport, uses: _Uses, stale: set[str], everything: bool) -> None:
    path = cache_dir() / TEXT_CACHE_FILE
    cached = _text_rows(path)
    unwanted = [fp for fp in cached if everything or fp not in uses.fingerprints or fp in stale]
    if not unwanted:
        return
    before = path.stat().st_size
    try:
        with TextEmbeddingCache(path) as cache:
            report.text_rows = cache.forget(unwanted)
    except sqlite3.Error as exc:  # locked by a long classify run, say: try again later
        report.skipped.append(NotRemoved(str(path), f"cannot change it ({exc})"))
        return
    report.text_models = sorted(unwanted)
    report.text_bytes = max(0, before - path.stat().st_size)


def _why_remove(export: ExportInfo, cutoff: float | None, everything: bool) -> str | None:
    if everything:
        return "all"
    if not export.indexes:
        return "unused"
    if cutoff is not None and export.last_used < cutoff:
        return "stale"
    return None


def _text_rows(path: Path) -> dict[str, tuple[int, int]]:
    """The text cache's (rows, queries) per fingerprint; none without the file (never made)."""
    if not path.is_file():
        return {}
    try:
        with TextEmbeddingCache(path) as cache:
            return cache.models()
    except sqlite3.Error:  # damaged or locked: nothing can be said of it, nor removed from it
        return {}
