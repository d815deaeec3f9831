"""Finding the image files under folders: by extension (in any case); hidden files, and the junk
that operating systems and NAS boxes leave beside photos, left out; exclude patterns, given or
in .clipcliignore files, honoured; a RAW file left out where its JPEG or HEIF sits beside it;
symlinked folders followed once."""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from pathlib import Path

from clipcli.media.excludes import IGNORE_FILE_NAME, ExcludeRules
from clipcli.media.formats import (
    IMAGE_EXTENSIONS,
    RAW_EXTENSIONS,
    RAW_TWIN_EXTENSIONS,
    is_image_name,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "JUNK_NAMES",
    "discover_images",
    "expand_paths",
    "is_image_name",
    "is_junk_name",
]

# Never photos, whether hidden files are asked for or not (names compared in lower case): the
# Finder's folder settings and Windows' thumbnail cache; the thumbnails that Synology NAS boxes
# (@eaDir) and desktop Linux (.thumbnails) draw of every photo; Windows' restore points and the
# deleted files of Windows and macOS on removable drives. Names starting "._" are AppleDouble
# files, which macOS writes beside each photo copied to a drive that has no room for its
# metadata: "._IMG_0001.JPG" is not a JPEG.
JUNK_NAMES: frozenset[str] = frozenset(
    {
        ".ds_store",
        "thumbs.db",
        "@eadir",
        ".thumbnails",
        "system volume information",
        "$recycle.bin",
        ".trashes",
    }
)

# A name whose first letter starts no junk name is cleared without a lower(): nearly all are.
_JUNK_INITIALS = frozenset(name[0] for name in JUNK_NAMES) | {
    name[0].upper() for name in JUNK_NAMES
}


def is_junk_name(name: str) -> bool:
    """Whether a file or folder name is one that discovery always leaves out."""
    return name.startswith("._") or name.lower() in JUNK_NAMES


def discover_images(
    root: Path, *, include_hidden: bool = False, excludes: Sequence[str] = ()
) -> list[Path]:
    """All image files under a folder, recursively, sorted.

    Paths are absolute but symlinks are kept as named, so results match what the user sees.
    Symlinked folders are followed once each; folders that cannot be read are skipped. A root
    that does not exist or is not a folder gives an empty list.

    Names starting with "." are left out unless `include_hidden`, and junk (is_junk_name)
    always. `excludes` are gitignore patterns matched against paths relative to `root`, as are
    the patterns of a .clipcliignore file in any folder, relative to that folder (see
    clipcli.media.excludes); a folder they leave out is not walked. A RAW file is left out when
    a JPEG or HEIF of the same name (ignoring case) is listed from the same folder: the camera
    wrote both of one photo. Raises InvalidExcludePatternError for a pattern git would refuse.
    """
    found: list[str] = []
    visited: set[tuple[int, int]] = set()
    # (folder, its path relative to root ending in "/" or "" for root, the rules in force)
    pending = [(os.path.abspath(root), "", ExcludeRules.given(excludes))]
    while pending:
        folder, relative, rules = pending.pop()
        entries = _scan_once(folder, visited)
        if entries is None:
            continue
        rules = _with_ignore_file(rules, relative, entries)
        excluded = rules.excludes if rules else None
        images: list[str] = []
        has_raw = False
        # Reversed, so that folders come off the stack in order: where two links lead to one
        # folder, the first by name is the one listed.
        entries.sort(key=_name, reverse=True)
        for entry in entries:
            name = entry.name
            # is_junk_name, inlined: this loop runs once for every file in a photo library.
            if name[0] == ".":
                if not include_hidden or name.startswith("._") or name.lower() in JUNK_NAMES:
                    continue
            elif name[0] in _JUNK_INITIALS and name.lower() in JUNK_NAMES:
                continue
            try:
                if entry.is_dir():
                    below = f"{relative}{name}/"
                    if excluded is None or not excluded(below):
                        pending.append((entry.path, below, rules))
                elif entry.is_file():
                    extension = os.path.splitext(name)[1].lower()
                    if extension in IMAGE_EXTENSIONS and (
                        excluded is None or not excluded(relative + name)
                    ):
                        images.append(entry.path)
                        has_raw = has_raw or extension in RAW_EXTENSIONS
            except OSError:
                continue  # e.g. a broken or unreadable symlink
        found.extend(_without_raw_twins(images) if has_raw else images)
    return [Path(p) for p in sorted(found)]


_name = operator.attrgetter("name")


def _scan_once(folder: str, visited: set[tuple[int, int]]) -> list[os.DirEntry[str]] | None:
    """The folder's entries, or None when it cannot be read or was walked already."""
    try:
        info = os.stat(folder)
        # A symlink loop, or two links to one folder, leads back to a folder already seen.
        if (info.st_dev, info.st_ino) in visited:
            return None
        visited.add((info.st_dev, info.st_ino))
        with os.scandir(folder) as scan:
            return list(scan)
    except OSError:
        return None  # permission denied, vanished while walking, not a folder


def _with_ignore_file(
    rules: ExcludeRules, relative: str, entries: list[os.DirEntry[str]]
) -> ExcludeRules:
    for entry in entries:
        if entry.name == IGNORE_FILE_NAME:
            try:
                regular = entry.is_file()  # a FIFO of that name would block the walk
            except OSError:
                regular = False
            return rules.with_ignore_file(relative, Path(entry.path)) if regular else rules
    return rules


def _without_raw_twins(paths: list[str]) -> list[str]:
    names = [os.path.splitext(os.path.basename(path)) for path in paths]
    developed = {
        stem.lower() for stem, extension in names if extension.lower() in RAW_TWIN_EXTENSIONS
    }
    return [
        path
        for path, (stem, extension) in zip(paths, names, strict=True)
        if not (extension.lower() in RAW_EXTENSIONS and stem.lower() in developed)
    ]


def expand_paths(paths: Sequence[Path], *, include_hidden: bool = False) -> list[Path]:
    """Command-line paths to image paths, in input order.

    A folder expands to its images (sorted); a file of any extension, or a path that does not
    exist, is passed through unchanged so that the caller can report it. A path reached twice
    (even spelled differently, ``a.jpg`` and ``./a.jpg``) is kept only at its first occurrence.
    A path with a junk name in it (``._IMG_0001.JPG``, ``@eaDir/...``) is left out, as a walk of
    its folder would leave it out: a shell glob names such files as readily as photos.
    """
    expanded: list[Path] = []
    seen: set[str] = set()
    for path in paths:
        if any(is_junk_name(part) for part in Path(path).parts):
            continue
        if os.path.isdir(path):
            candidates = discover_images(path, include_hidden=include_hidden)
        else:
            candidates = [path]
        for candidate in candidates:
            key = os.path.abspath(candidate)
            if key not in seen:
                seen.add(key)
                expanded.append(candidate)
    return expanded
