"""Copying and moving files into folders so that a kill at any moment loses nothing.

A copy is written to a hidden temporary name in the destination folder, flushed to disk, then
renamed to its real name by a rename that refuses to replace anything: a real name only ever
holds a whole file, and no file is ever overwritten. A move on one filesystem is that rename
of the file itself (it is whole in exactly one place at every instant); across filesystems it
is a copy, then the source is removed (a kill between leaves it in both places, never in
neither, and the next run finds the identical copy and removes the source).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from clipcli.filing.exclusive_rename import rename_exclusive
from clipcli.filing.folder_contents import FolderContents, Spot

_COPY_CHUNK = 1 << 20
# Another file that took the name between the listing and the rename is stepped past; this
# many in a row mean something keeps writing there.
_MAX_RACES = 100


@dataclass(frozen=True)
class Landing:
    """Where a file went (or would go): `path`; `written` False when the identical file was
    there already; `source_removed` when the source is gone (moved, or its move completed)."""

    path: Path
    written: bool
    source_removed: bool = False


class Filer:
    """Files sources into folders, each under its own name or the first free numbered one,
    beside nothing but files it was compared with. With `dry_run` it only says where each
    would go, counting the files it would have written."""

    def __init__(self, tag: str, *, dry_run: bool = False) -> None:
        self.tag = tag
        self.dry_run = dry_run
        self.contents = FolderContents()

    def copy(self, source: Path, folder: Path, name: str | None = None) -> Landing:
        """Copy `source` into `folder` (made if missing) as `name` (by default its own); the
        source is left as it is, and the copy keeps its modification time."""
        spot = self.contents.spot(source, folder, name or source.name)
        if spot.identical:
            return Landing(spot.path, written=False)
        if self.dry_run:
            self.contents.add(spot.path, source)
            return Landing(spot.path, written=True)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = self._copied_to_temporary(source, folder)
        try:
            spot = self._renamed_into_place(temporary, source, folder, name or source.name, spot)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()  # still there when the rename failed, or was not needed
        if spot.identical:
            return Landing(spot.path, written=False)
        _sync_folder(folder)
        return Landing(spot.path, written=True)

    def move(self, source: Path, folder: Path, name: str | None = None) -> Landing:
        """Move `source` into `folder` (made if missing) as `name` (by default its own). Where
        the identical file is there already, the source is removed: the move completes."""
        spot = self.contents.spot(source, folder, name or source.name)
        if spot.identical:
            removed = self._remove_source(source, spot.path)
            return Landing(spot.path, written=False, source_removed=removed)
        if self.dry_run:
            self.contents.add(spot.path, source)
            return Landing(spot.path, written=True, source_removed=True)
        folder.mkdir(parents=True, exist_ok=True)
        if not os.path.islink(source) and _one_filesystem(source, folder):
            try:
                return self._renamed(source, folder, name or source.name, spot)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # one device, two mounts (a bind mount)
                    raise
        landing = self.copy(source, folder, name)
        removed = self._remove_source(source, landing.path)
        return Landing(landing.path, written=landing.written, source_removed=removed)

    def _renamed(self, source: Path, folder: Path, name: str, spot: Spot) -> Landing:
        spot = self._renamed_into_place(source, source, folder, name, spot)
        if spot.identical:  # another file of the same bytes took the name meanwhile
            removed = self._remove_source(source, spot.path)
            return Landing(spot.path, written=False, source_removed=removed)
        self.contents.forget(source)
        _sync_folder(folder)
        _sync_folder(source.parent)
        return Landing(spot.path, written=True, source_removed=True)

    def _renamed_into_place(
        self, file: Path, source: Path, folder: Path, name: str, spot: Spot
    ) -> Spot:
        """Rename `file` (the source, or its copy) to the spot's path; where something took
        that name since the folder was listed, look again, and use the next free name."""
        for _ in range(_MAX_RACES):
            try:
                rename_exclusive(file, spot.path)
            except FileExistsError:
                self.contents.add(spot.path)
                spot = self.contents.spot(source, folder, name)
                if spot.identical:
                    return spot
                continue
            self.contents.add(spot.path)
            return spot
        raise FileExistsError(errno.EEXIST, "every free name was taken meanwhile", str(folder))

    def _copied_to_temporary(self, source: Path, folder: Path) -> Path:
        """The source's bytes and times in a new hidden file in `folder`, on disk."""
        temporary = folder / f".clipcli-{self.tag}-{secrets.token_hex(8)}.part"
        try:
            with open(source, "rb") as reader, open(temporary, "xb") as writer:
                shutil.copyfileobj(reader, writer, _COPY_CHUNK)
                writer.flush()
                # Modes and times: some filesystems (FAT on a card) take only part of them.
                with contextlib.suppress(OSError):
                    shutil.copystat(source, temporary)
                os.fsync(writer.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        return temporary

    def _remove_source(self, source: Path, copy: Path) -> bool:
        """Remove the source of a move whose bytes are safe at `copy` (in a dry run, say it
        would be), unless `copy` is the source itself seen through a link: removing it then
        would lose the file."""
        if os.path.realpath(source) == os.path.realpath(copy):
            return False
        if self.dry_run:
            return True
        with contextlib.suppress(FileNotFoundError):
            source.unlink()
        self.contents.forget(source)
        _sync_folder(source.parent)
        return True


def remove_stale_parts(root: Path, tag: str) -> list[Path]:
    """Remove the temporary files that a killed run with `tag` left anywhere under `root`;
    returns them. Only names this module makes are touched."""
    pattern = re.compile(rf"\.clipcli-{re.escape(tag)}-[0-9a-f]{{16}}\.part")
    removed: list[Path] = []
    for folder, _, files in os.walk(root):
        for name in files:
            if pattern.fullmatch(name):
                path = Path(folder, name)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def _one_filesystem(source: Path, folder: Path) -> bool:
    return os.stat(source).st_dev == os.stat(folder).st_dev


def _sync_folder(folder: Path) -> None:
    """Put a folder's entries on disk: a rename is durable only once its folder is."""
    if os.name != "posix":
        return  # Windows has no handle to a folder to flush; NTFS journals renames
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems refuse to sync a folder; the rename stands all the same
    finally:
        os.close(descriptor)
