"""`clipcli info` and `clipcli roots` written out: JSON for scripts (the README documents its
shape), and lines for people."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TextIO

from clipcli.cli.cache_view import size
from clipcli.info import IndexInfo, RootInfo
from clipcli.literal import shown
from clipcli.roots import RootMove


def info_json(info: IndexInfo) -> dict[str, Any]:
    return asdict(info)


def write_info(info: IndexInfo, out: TextIO) -> None:
    model = "no model yet" if info.model is None else info.model
    if info.pretrained:
        model += f" ({info.pretrained})"
    out.write(f"index:    {shown(info.index)}\n")
    out.write(f"model:    {shown(model)}\n")
    out.write(f"photos:   {info.photos} ({info.skipped} unreadable files skipped)\n")
    out.write(f"layout:   {info.layout}\n")
    out.write(f"size:     catalog {size(info.catalog_bytes)}, FAISS {size(info.faiss_bytes)}\n")
    out.write(f"updated:  {info.updated or 'never'}\n")
    write_roots(info.roots, out, heading="roots:")


def roots_json(roots: list[RootInfo]) -> list[dict[str, Any]]:
    return [asdict(root) for root in roots]


def write_roots(roots: list[RootInfo], out: TextIO, *, heading: str | None = None) -> None:
    """One line a root: its photo count, whether it is there now, and its path."""
    if heading is not None:
        out.write(f"{heading}{'    none recorded yet' if not roots else ''}\n")
    for root in roots:
        state = "" if root.reachable else "  (not reachable)"
        out.write(f"  {root.photos:>8} photos  {shown(root.path)}{state}\n")


def move_json(moved: RootMove) -> dict[str, Any]:
    return asdict(moved)


def write_move(moved: RootMove, out: TextIO) -> None:
    noun = "photo" if moved.photos == 1 else "photos"
    out.write(f"re-pointed {moved.photos} {noun}: {shown(moved.old)} -> {shown(moved.new)}\n")
