"""A row a shard command left out, and why: for the report, as `clipcli index` lists its own."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def storable_path(path: str) -> bool:
    """Whether parquet's UTF-8 strings can hold this path: not one whose name has bytes of
    another encoding (Python's lone surrogates), which the catalog keeps as bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NOT_UTF8 = "its name is not UTF-8, which parquet's strings cannot hold"
