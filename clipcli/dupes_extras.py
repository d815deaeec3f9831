"""`clipcli dupes --move-extras DIR`: set each group's copies aside, keeping its keeper.

The copies (every member but the keeper) are moved into DIR under the path they had below their
index root, that root's folder name first (`~/Pictures/2023/a.jpg` goes to
`DIR/Pictures/2023/a.jpg`), so that putting one back is a move the other way. Moves are those of
`clipcli sort` (filing/transfer.py): nothing is overwritten and a kill at any moment leaves each
file whole. `DIR/clipcli-dupes.csv` records each move as it happens. Nothing is moved from a
group whose keeper is gone, nor a copy whose file changed since it was indexed (it may no longer
be a copy).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from clipcli.dupes import Copy, DupesReport
from clipcli.errors import ClipcliError, UsageError
from clipcli.filing.manifest import Manifest
from clipcli.filing.transfer import Filer, remove_stale_parts
from clipcli.locks import Busy, exclusive
from clipcli.store import root_upkeep
from clipcli.store.catalog import Catalog
from clipcli.store.catalog_records import CatalogEntry

MANIFEST_NAME = "clipcli-dupes.csv"
MANIFEST_COLUMNS = ("source", "destination", "keeper", "similarity", "hash_distance")
LOCK_NAME = ".clipcli-dupes.lock"
TRANSFER_TAG = "dupes"
# Where a copy lying under no recorded root goes, below its absolute path.
ELSEWHERE = "_elsewhere"

MOVED, WOULD_MOVE, SOURCE_REMOVED, WOULD_REMOVE = (
    "moved",
    "would move",
    "source removed",
    "would remove source",
)


@dataclass(frozen=True)
class SetAside:
    """One copy moved (or, in a dry run, to be moved) into DIR."""

    source: str
    destination: str
    keeper: str
    action: str
    bytes: int


@dataclass(frozen=True)
class Left:
    """A copy left where it is, and why."""

    path: str
    reason: str


@dataclass
class ExtrasReport:
    """What `--move-extras` did, or in a dry run would do."""

    into: str
    manifest: str
    dry_run: bool
    moved: list[SetAside] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)  # kept in place on purpose
    failed: list[Left] = field(default_factory=list)  # could not be moved

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.moved)


def move_extras(found: DupesReport, into: Path, *, dry_run: bool = False) -> ExtrasReport:
    """Move the copies of `found`'s groups into `into`, each below its root's path."""
    into = Path(os.path.abspath(into))
    if os.path.exists(into) and not os.path.isdir(into):
        raise UsageError(f"--move-extras {into}: not a folder")
    with Catalog(Path(found.index), read_only=True) as catalog:
        roots = [root.path for root in catalog.roots()]
        entries = catalog.entries()
    report = ExtrasReport(str(into), str(into / MANIFEST_NAME), dry_run)
    filer = Filer(TRANSFER_TAG, dry_run=dry_run)
    with _ready(into, dry_run) as manifest:
        for group in found.groups:
            keeper_gone = not os.path.isfile(group.keeper)
            for member in group.members:
                why = f"its keeper {group.keeper} is gone" if keeper_gone else None
                why = why or _changed(member.path, entries.get(member.path))
                if why is not None:
                    report.left.append(Left(member.path, why))
                    continue
                moved = _move(filer, member, group.keeper, into / _place_below(member.path, roots))
                if isinstance(moved, Left):
                    report.failed.append(moved)
                    continue
                report.moved.append(moved)
                if manifest is not None:
                    manifest.append(_row(moved, member))
    return report


def _move(filer: Filer, member: Copy, keeper: str, place: Path) -> SetAside | Left:
    """One copy moved to `place` (or the first free name beside it)."""
    try:
        landing = filer.move(Path(member.path), place.parent)
    except OSError as exc:
        return Left(member.path, exc.strerror or str(exc))
    if landing.written:
        action = WOULD_MOVE if filer.dry_run else MOVED
    else:  # its identical copy was there already: the move of an earlier run completes
        action = WOULD_REMOVE if filer.dry_run else SOURCE_REMOVED
    return SetAside(member.path, str(landing.path), keeper, action, member.bytes)


def _row(moved: SetAside, member: Copy) -> list[str]:
    similarity, distance = f"{member.similarity:.4f}", str(member.hash_distance)
    return [moved.source, moved.destination, moved.keeper, similarity, distance]


@contextmanager
def _ready(into: Path, dry_run: bool) -> Iterator[Manifest | None]:
    """DIR held for this run alone, an earlier run's leftovers cleared, the manifest open; in
    a dry run nothing is touched, not even DIR."""
    if dry_run:
        yield None
        return
    try:
        with exclusive(into / LOCK_NAME, wait=False):
            remove_stale_parts(into, TRANSFER_TAG)
            with Manifest(into / MANIFEST_NAME, MANIFEST_COLUMNS) as manifest:
                yield manifest
    except Busy:
        raise ClipcliError(
            f"{into}: another clipcli dupes is moving copies into it",
            hint="wait for it to finish",
        ) from None


def _changed(path: str, entry: CatalogEntry | None) -> str | None:
    """Why a copy must stay: gone, or changed since it was indexed; None when it may move."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return "gone"
    if entry is None or (stat.st_size, stat.st_mtime_ns) != (entry.size, entry.mtime_ns):
        return "changed since it was indexed; `clipcli index` first"
    return None


def _place_below(path: str, roots: Sequence[str]) -> Path:
    """Where a copy goes below DIR: its path below its root (the deepest that holds it), the
    root's own folder name first; a copy under no root keeps its whole path below ELSEWHERE."""
    holding = [root for root in roots if root_upkeep.is_under(path, [root])]
    if holding:
        root = max(holding, key=len)
        return Path(os.path.basename(root.rstrip(os.sep)) or ELSEWHERE) / os.path.relpath(
            path, root
        )
    whole = Path(path)
    return Path(ELSEWHERE) / whole.relative_to(whole.anchor)
