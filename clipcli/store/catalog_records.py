"""What the catalog stores and hands back, as records (a file's entry, a new image, the model,
a move, an unreadable file, a date, a picture's hash), and how a path is stored: as text when
it is UTF-8, else as the bytes the file system holds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from clipcli.media.perceptual_hash import PictureHash
    from clipcli.vectors import Embeddings


@dataclass(frozen=True)
class CatalogEntry:
    """What the catalog knows of one file, without its vector."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class HashedEntry(CatalogEntry):
    """An entry with the hash of its pixels (clipcli.media.perceptual_hash: pHash and colour
    grid); None until an index run computes it (a catalog made before hashes were recorded)."""

    picture: PictureHash | None


@dataclass(frozen=True)
class StoredImage:
    """One row of the images table as stored, vector included: what a repair copies over."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    embedding: bytes
    indexed_at: float
    taken_at: float | None = None  # None: not read yet (or the catalog predates dates)
    picture: PictureHash | None = None  # None: not computed yet (or the catalog predates hashes)


class RecordedModel(NamedTuple):
    """The model a catalog's vectors were made with: its name, and its weights' tag or last
    path."""

    name: str
    pretrained: str | None


class Unreadable(NamedTuple):
    """What the catalog remembers of a file that did not decode, so it is not tried again
    until it changes."""

    size: int
    mtime_ns: int
    reason: str


class UnreadableFile(NamedTuple):
    path: str
    size: int
    mtime_ns: int
    reason: str


class Move(NamedTuple):
    """An entry's new path and stats: its vector stays."""

    id: int
    path: str
    size: int
    mtime_ns: int


class Touch(NamedTuple):
    """An entry's new stats, its content unchanged."""

    id: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class NewImage:
    """A file to add, with its embedding, when it was taken (clipcli.media.taken) and the
    hash of its pixels (pHash and colour grid); None leaves either for the next index run to
    read."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    embedding: Embeddings
    taken_at: float | None = None
    picture: PictureHash | None = None


class Undated(NamedTuple):
    """An entry whose date was never read: a catalog made before dates were recorded."""

    id: int
    path: str
    mtime_ns: int


class Dated(NamedTuple):
    """When the photo of an entry was taken."""

    id: int
    taken_at: float


class Unhashed(NamedTuple):
    """An entry whose picture hash was never computed: a catalog made before hashes were."""

    id: int
    path: str


class Hashed(NamedTuple):
    """The hash of an entry's pixels: pHash and colour grid."""

    id: int
    picture: PictureHash


def path_value(path: str) -> str | bytes:
    """How a path is stored: itself when it is UTF-8, else the bytes the filesystem holds."""
    if isinstance(path, str) and not path.isascii():  # anything else is for SQLite to judge
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return os.fsencode(path)
    return path


def path_from(value: str | bytes) -> str:
    """A stored path as Python names the file (odd bytes as lone surrogates, as os.listdir)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value
