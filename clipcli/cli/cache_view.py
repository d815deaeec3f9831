"""`clipcli cache` and `clipcli cache clean` written out: JSON for scripts (the README documents
its shape), and lines for people."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, TextIO

from clipcli.cache import CacheReport, CleanReport, ExportInfo
from clipcli.literal import shown


def cache_json(report: CacheReport) -> dict[str, Any]:
    return {
        "cache": report.cache,
        "limit": report.limit,
        "exports": [_export_json(export) for export in report.exports],
        "exports_bytes": report.exports_bytes,
        "text_embeddings": {
            "path": report.text_cache,
            "bytes": report.text_bytes,
            "models": [
                {
                    "fingerprint": model.fingerprint,
                    "model": model.model,
                    "pretrained": model.pretrained,
                    "rows": model.rows,
                    "queries": model.queries,
                    "indexes": model.indexes,
                }
                for model in report.text_models
            ],
        },
        "eval_embeddings": {"bytes": report.eval_bytes, "datasets": report.eval_datasets},
        "thumbnails": {"bytes": report.thumbnail_bytes},
    }


def clean_json(report: CleanReport) -> dict[str, Any]:
    return {
        "removed": [
            {**_export_json(removed.export), "reason": removed.reason} for removed in report.removed
        ],
        "skipped": [{"path": skipped.path, "reason": skipped.reason} for skipped in report.skipped],
        "text_embeddings": {
            "rows": report.text_rows,
            "models": report.text_models,
            "bytes": report.text_bytes,
        },
        "eval_embeddings": {"datasets": report.eval_datasets, "bytes": report.eval_bytes},
        "thumbnails": {"bytes": report.thumbnail_bytes},
        "freed": report.freed,
    }


def _export_json(export: ExportInfo) -> dict[str, Any]:
    return {
        "path": export.path,
        "model": export.model,
        "pretrained": export.pretrained,
        "fingerprint": export.fingerprint,
        "bytes": export.bytes,
        "last_used": iso_time(export.last_used),
        "indexes": export.indexes,
        "busy": export.busy,
    }


def write_cache(report: CacheReport, out: TextIO) -> None:
    """One line per export and per model with cached text, each cache under a heading."""
    limit = "no limit" if report.limit is None else f"limit {size(report.limit)}"
    out.write(
        f"exported models: {len(report.exports)}, {size(report.exports_bytes)} ({limit}) in "
        f"{shown(report.cache)}\n"
    )
    now = time.time()
    for export in report.exports:
        users = ", ".join(shown(index) for index in export.indexes) or "no known index"
        busy = ", being written" if export.busy else ""
        out.write(
            f"  {size(export.bytes):>9}  used {ago(export.last_used, now)}{busy}  "
            f"{_weights(export.model, export.pretrained)}  index: {users}\n"
        )
    out.write(
        f"label and query embeddings: {size(report.text_bytes)} in {shown(report.text_cache)}\n"
    )
    for model in report.text_models:
        users = ", ".join(shown(index) for index in model.indexes) or "no known index"
        out.write(
            f"  {_count(model.rows - model.queries, 'label')}, "
            f"{_count(model.queries, 'query', 'queries')}  "
            f"{_weights(model.model, model.pretrained)}  index: {users}\n"
        )
    datasets = len(report.eval_datasets)
    out.write(
        f"image embeddings of eval datasets: {_count(datasets, 'dataset')}, "
        f"{size(report.eval_bytes)}\n"
    )
    for dataset in report.eval_datasets:
        out.write(f"  {shown(dataset)}\n")
    out.write(f"thumbnails: {size(report.thumbnail_bytes)}\n")


def write_clean(report: CleanReport, out: TextIO) -> None:
    """One line per export removed, one for the text cache, and the bytes freed."""
    reasons = {"unused": "no known index uses it", "stale": "not used lately", "all": "--all"}
    for removed in report.removed:
        export = removed.export
        out.write(
            f"removed {shown(export.path)}  {_weights(export.model, export.pretrained)}, "
            f"{size(export.bytes)}, {reasons[removed.reason]}\n"
        )
    if report.text_rows:
        out.write(
            f"removed {_count(report.text_rows, 'cached text embedding')} of "
            f"{_count(len(report.text_models), 'model')}\n"
        )
    if report.eval_datasets:
        out.write(
            f"removed the image embeddings of {_count(len(report.eval_datasets), 'eval dataset')}\n"
        )
    if report.thumbnail_bytes:
        out.write(f"removed the thumbnails, {size(report.thumbnail_bytes)}\n")
    out.write(f"freed {size(report.freed)}\n")


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else many or one + 's'}"


def _weights(model: str | None, pretrained: str | None) -> str:
    if model is None:
        return "unknown model"
    return shown(f"{model} ({pretrained})" if pretrained else model)


def size(count: int) -> str:
    """Bytes in decimal units, as CLIPCLI_CACHE_LIMIT reads them: 660 MB, 1.7 GB."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} B"


def ago(moment: float, now: float) -> str:
    seconds = max(0.0, now - moment)
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            count = int(seconds // length)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def iso_time(moment: float) -> str:
    """UTC, to the second: 2025-06-01T12:00:00Z."""
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
