"""What is in the folders files are filed into, and where a new file goes among it: beside an
identical file already there (nothing to do), else under the first free name.

`cat.jpg` is compared with `cat.jpg` and every `cat (N).jpg`, so that a run that is repeated,
or one that was killed, finds what it filed before under whichever number it took. Each folder
is listed once, then kept up to date as files land; a dry run records what would land, so
that its plan numbers names as the real run would.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from clipcli.filing.folder_names import name_key
from clipcli.media.hashing import file_sha256

_NUMBERED = re.compile(r"^(?P<stem>.*) \((?P<number>[0-9]+)\)$")


@dataclass(frozen=True)
class Spot:
    """Where a file goes: `path`, and whether the file there already holds its bytes."""

    path: Path
    identical: bool


@dataclass(frozen=True)
class _Entry:
    path: Path  # the name in the folder
    content: Path  # where its bytes are: the file itself, or in a dry run the file to come
    size: int | None  # None: not a regular file (a folder, a dangling link)
    number: int  # 0 for the name itself, N for its "stem (N).ext" variant


class FolderContents:
    """The files of the folders seen so far, with the names they take."""

    def __init__(self) -> None:
        # folder -> name key -> the entries that are that name or one of its numbered variants
        self._groups: dict[Path, dict[str, list[_Entry]]] = {}
        self._taken: dict[Path, set[str]] = {}
        self._digests: dict[Path, str] = {}

    def spot(self, source: Path, folder: Path, name: str) -> Spot:
        """Where `source` goes in `folder` under `name`: the first of `name`, `stem (1).ext`,
        `stem (2).ext`... that holds the same bytes, else the first that is free."""
        groups, taken = self._listed(folder)
        size = os.path.getsize(source)
        for entry in sorted(groups.get(name_key(name), ()), key=lambda entry: entry.number):
            if entry.size == size and self.same_bytes(source, entry.content):
                return Spot(entry.path, identical=True)
        stem, extension = os.path.splitext(name)
        candidate, number = name, 0
        while name_key(candidate) in taken:
            number += 1
            candidate = f"{stem} ({number}){extension}"
        return Spot(folder / candidate, identical=False)

    def add(self, path: Path, content: Path | None = None) -> None:
        """Record that `path` now holds a file: the bytes of `content` (by default its own)."""
        content = path if content is None else content
        try:
            size: int | None = os.path.getsize(content) if os.path.isfile(content) else None
        except OSError:
            size = None
        self._add(path.parent, path.name, content, size)

    def same_bytes(self, first: Path, second: Path) -> bool:
        """Whether two files hold the same bytes (sizes compared first, then SHA-256)."""
        if os.path.getsize(first) != os.path.getsize(second):
            return False
        return self._digest(first) == self._digest(second)

    def forget(self, path: Path) -> None:
        """A file that moved away: its digest, kept by path, would now be wrong."""
        self._digests.pop(path, None)

    def _digest(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = file_sha256(path)
        return self._digests[path]

    def _listed(self, folder: Path) -> tuple[dict[str, list[_Entry]], set[str]]:
        if folder not in self._groups:
            self._groups[folder], self._taken[folder] = {}, set()
            for entry in _scan(folder):
                try:
                    size = entry.stat().st_size if entry.is_file() else None
                except OSError:
                    size = None
                self._add(folder, entry.name, Path(entry.path), size)
        return self._groups[folder], self._taken[folder]

    def _add(self, folder: Path, name: str, content: Path, size: int | None) -> None:
        groups, taken = self._listed(folder)
        key = name_key(name)
        taken.add(key)
        path = folder / name
        groups.setdefault(key, []).append(_Entry(path, content, size, 0))
        stem, extension = os.path.splitext(name)
        numbered = _NUMBERED.match(stem)
        if numbered is not None:
            base = name_key(numbered["stem"] + extension)
            groups.setdefault(base, []).append(_Entry(path, content, size, int(numbered["number"])))


def _scan(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except FileNotFoundError:
        return []  # a folder not made yet holds nothing
