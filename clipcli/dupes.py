"""`clipcli dupes`: groups of near-duplicates among an index's photos (copies of one picture,
resized, re-encoded or saved again), each with the copy to keep. Nothing is deleted or moved.

Candidates are the pairs whose vectors' cosine reaches the threshold (store.near_pairs). CLIP
puts two photos of one subject about as close as two copies of one photo, so a pair counts only
when the picture hashes of their pixels agree too (clipcli.media.perceptual_hash): the pHashes
differ in HASH_LIMIT bits at most, and the colour grids by COLOUR_LIMIT at most; `loose` takes
the vectors' word alone (the same scene). Files of one content (SHA-256) are copies whatever
the threshold. Pairs link into groups: A like B and B like C make one group of three.

No model is loaded: the vectors, hashes and stats are the catalog's. A photo whose hash the
catalog lacks (an index made before hashes were recorded, not yet brought up to date) is
hashed from its file for this run only; the report counts them, as `clipcli index` stores
them. A photo whose file is gone or no longer decodes takes no part.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clipcli.errors import IndexMissingError, UsageError
from clipcli.store import vector_index
from clipcli.store.catalog import CATALOG_FILE, Catalog
from clipcli.store.catalog_records import HashedEntry
from clipcli.store.near_pairs import NearPairs, near_pairs

if TYPE_CHECKING:
    from clipcli.media.perceptual_hash import PictureHash
    from clipcli.vectors import Embeddings

DEFAULT_THRESHOLD = 0.95
# Bits in which two copies' pHashes may differ, as measured (tests/test_dupes.py
# and tests/media/test_perceptual_hash.py keep checking both ends): copies of real photos
# resized to 15-400% or saved again as JPEG (quality 60-95), PNG or WEBP differ in 0-2 bits,
# and the same photo cropped by a tenth in 12-16. Flat procedural drawings are the hard case:
# of their copies (any size, 48-1200 px, down to JPEG quality 30 and a quarter of the size)
# 98.7% differ in 8 bits or fewer, 99.3% in 10; of two drawings of one colour and shape, 0.2%
# in 8 or fewer, 0.3% in 10. On folders of 16 such drawings with 4 copies each, 10 merged two
# drawings where 8 merged none and still found 96-100% of the copies.
HASH_LIMIT = 8
# How far apart two copies' 4x4 colour grids may be (the mean absolute difference of their 48
# values, of 255), as measured (tests/test_dupes.py and tests/media/test_perceptual_hash.py
# keep checking both ends). The pHash sees grey levels only: one outline at one place, filled
# with one colour, on flat backgrounds of two colours, hashes 0-8 bits apart, and 40-60 apart
# here. Copies of real photos resized to 15-400% or saved again as JPEG (quality 60-95), PNG
# or WEBP differ by 0-1.3; of 4,320 copies of drawings resized to 50-200% and saved likewise,
# by 2.5 at most (99% by 1.5); of drawings of any size shrunk to as little as a quarter and
# saved down to quality 30, 99.9% by 4.9 at most, the worst (a 14-px thumbnail) by 8.6. Of 520
# pairs of different drawings of one colour and shape within HASH_LIMIT, one differed by 4.8,
# the next by 9.1, 95% by 28 or more. A grey version of a colour photo differs by 11-42: an
# edit, not a copy.
COLOUR_LIMIT = 6.0


@dataclass(frozen=True)
class Copy:
    """A photo of a group other than its keeper: how close it is to the keeper, and its size."""

    path: str
    similarity: float  # the cosine of the two vectors; 1.0 for a file of the same content
    hash_distance: int  # bits in which the pHashes differ, 0..64
    bytes: int


@dataclass(frozen=True)
class DuplicateGroup:
    """Copies of one picture: the one to keep, and the others, most similar first."""

    keeper: str
    members: list[Copy]

    @property
    def extras(self) -> list[str]:
        """The paths a user may remove or move away, keeping the keeper."""
        return [member.path for member in self.members]

    @property
    def extra_bytes(self) -> int:
        return sum(member.bytes for member in self.members)


@dataclass
class DupesReport:
    """What `clipcli dupes` found; its groups are the --json contract."""

    index: str
    photos: int
    threshold: float
    loose: bool
    groups: list[DuplicateGroup] = field(default_factory=list)
    hashed_now: int = 0  # photos the catalog had no picture hash for, hashed for this run
    unreadable: list[str] = field(default_factory=list)  # candidates gone or no longer decoding

    @property
    def extra_copies(self) -> int:
        return sum(len(group.members) for group in self.groups)

    @property
    def extra_bytes(self) -> int:
        return sum(group.extra_bytes for group in self.groups)


def find_duplicates(
    folder: Path, *, threshold: float = DEFAULT_THRESHOLD, loose: bool = False
) -> DupesReport:
    """The groups of copies among the photos of the index in `folder`, largest group first.

    Each group's keeper is its photo of the most pixels, then the oldest (modification time),
    then of the shortest path; every other member gets its cosine and hash distance to the
    keeper. The catalog is only read.
    """
    if not 0 < threshold <= 1:
        raise UsageError(f"--threshold must be above 0 and at most 1, not {threshold}")
    if not (folder / CATALOG_FILE).is_file():
        raise IndexMissingError(
            f"{folder}: no index here", hint="run `clipcli index DIR` first (or pass --index)"
        )
    with Catalog(folder, read_only=True) as catalog:
        photos = 0 if catalog.is_blank else catalog.count()
        if not photos:
            raise IndexMissingError(
                f"{folder}: the index is empty", hint="run `clipcli index DIR` to add photos"
            )
        index = vector_index.refresh(folder, catalog)
        pairs = near_pairs(index, catalog, threshold)
        report = DupesReport(str(folder), photos, threshold, loose)
        report.groups = _groups(catalog, pairs, catalog.exact_copies(), loose, report)
    return report


def _groups(
    catalog: Catalog,
    pairs: NearPairs,
    exact: list[list[int]],
    loose: bool,
    report: DupesReport,
) -> list[DuplicateGroup]:
    """The pairs confirmed (by hash, unless loose) and the exact copies, linked into groups."""
    candidates = sorted({*pairs.first.tolist(), *pairs.second.tolist(), *_flat(exact)})
    entries, hashes = _readable(catalog.entries_for(candidates), report)
    linked = [pair for ids in exact for pair in itertools.pairwise(i for i in ids if i in hashes)]
    for a, b in zip(pairs.first.tolist(), pairs.second.tolist(), strict=True):
        if a in hashes and b in hashes and (loose or _one_picture(hashes[a], hashes[b])):
            linked.append((a, b))
    groups = _connected(linked)
    vectors = catalog.vectors_for(_flat(groups))
    found = [_group([entries[id_] for id_ in ids], hashes, vectors) for ids in groups]
    return sorted(found, key=lambda group: (-len(group.members), group.keeper))


def _one_picture(first: PictureHash, second: PictureHash) -> bool:
    """Whether two picture hashes are close enough for copies of one picture: in grey levels
    (pHash) and in colour."""
    from clipcli.media.perceptual_hash import colour_difference, hash_distance

    return (
        hash_distance(first.phash, second.phash) <= HASH_LIMIT
        and colour_difference(first.colours, second.colours) <= COLOUR_LIMIT
    )


def _readable(
    found: dict[int, HashedEntry], report: DupesReport
) -> tuple[dict[int, HashedEntry], dict[int, PictureHash]]:
    """The entries whose files are still there, and the picture hash of each: the stored
    one, else one computed now from the file. Those gone or no longer decoding are reported."""
    from clipcli.media.perceptual_hash import file_picture_hashes  # Pillow: decodes pictures

    present = [entry for entry in found.values() if os.path.isfile(entry.path)]
    hashes = {entry.id: entry.picture for entry in present if entry.picture is not None}
    unhashed = [entry for entry in present if entry.picture is None]
    computed = file_picture_hashes([Path(entry.path) for entry in unhashed])
    for entry, picture in zip(unhashed, computed, strict=True):
        if picture is not None:
            hashes[entry.id] = picture
    report.hashed_now = len(computed) - computed.count(None)
    report.unreadable = sorted(entry.path for entry in found.values() if entry.id not in hashes)
    return {id_: found[id_] for id_ in hashes}, hashes


def _group(
    members: list[HashedEntry], hashes: dict[int, PictureHash], vectors: dict[int, Embeddings]
) -> DuplicateGroup:
    """The keeper of a group, and the others with their cosine and pHash distance to it."""
    from clipcli.media.perceptual_hash import hash_distance

    pixels = {entry.id: _pixels(entry.path) for entry in members}
    keeper = min(members, key=lambda e: (-pixels[e.id], e.mtime_ns, len(e.path), e.path))
    copies = []
    for entry in members:
        if entry is keeper:
            continue
        if entry.sha256 == keeper.sha256:  # the same file content: the same picture exactly
            similarity, distance = 1.0, 0
        else:
            cosine = float(vectors[keeper.id] @ vectors[entry.id])
            similarity = round(min(1.0, max(-1.0, cosine)), 6)
            distance = hash_distance(hashes[keeper.id].phash, hashes[entry.id].phash)
        copies.append(Copy(entry.path, similarity, distance, entry.size))
    copies.sort(key=lambda c: (-c.similarity, c.hash_distance, c.path))
    return DuplicateGroup(keeper.path, copies)


def _pixels(path: str) -> int:
    """The photo's pixel count from its header; 0 (never the keeper, given another) when
    it cannot be read."""
    from clipcli.media.decode import ImageDecodeError, pixel_count

    try:
        return pixel_count(Path(path))
    except ImageDecodeError:
        return 0


def _connected(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """The groups (each sorted) that the pairs link their ids into: union-find."""
    parent: dict[int, int] = {}

    def root(id_: int) -> int:
        parent.setdefault(id_, id_)
        while parent[id_] != id_:
            parent[id_] = parent[parent[id_]]  # halve the path on the way up
            id_ = parent[id_]
        return id_

    for a, b in pairs:
        low, high = sorted((root(a), root(b)))
        parent[high] = low
    groups: dict[int, list[int]] = {}
    for id_ in sorted(parent):
        groups.setdefault(root(id_), []).append(id_)
    return list(groups.values())


def _flat(lists: Sequence[Sequence[int]]) -> list[int]:
    return [id_ for ids in lists for id_ in ids]
