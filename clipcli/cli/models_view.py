"""`clipcli models` written out: JSON for scripts (the README documents its shape), and a table
for people."""

from __future__ import annotations

from typing import Any, TextIO

from clipcli.models.catalogue import Known, is_cached, tiers_of


def models_json(entries: tuple[Known, ...]) -> list[dict[str, Any]]:
    return [
        {
            "name": entry.name,
            "pretrained": entry.pretrained,
            "tiers": tiers_of(entry),
            "imagenet_top1": entry.imagenet_top1,
            "image_gflops": entry.image_gflops,
            "params_m": entry.params_m,
            "licence": entry.licence,
            "research_only": entry.research_only,
            "tokenizer": entry.tokenizer,
            "cached": is_cached(entry),
            "source": entry.source,
        }
        for entry in entries
    ]


def write_models(entries: tuple[Known, ...], out: TextIO) -> None:
    """One line a model, aligned; a figure not published shows as a dash."""
    rows = [["model", "weights", "tier", "IN-1k", "GFLOPs", "params", "licence", "cached"]]
    for entry in entries:
        licence = entry.licence + (" (research only)" if entry.research_only else "")
        rows.append(
            [
                entry.name,
                entry.pretrained,
                ",".join(tiers_of(entry)),
                _figure(entry.imagenet_top1, "%"),
                _figure(entry.image_gflops, ""),
                _figure(entry.params_m, "M"),
                licence,
                "yes" if is_cached(entry) else "no",
            ]
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )
    out.write(
        "IN-1k: ImageNet zero-shot top-1; GFLOPs and params: the image tower (params: both). "
        "Sources in the README.\n"
    )


def _figure(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:g}{unit}"
