"""Finding the image files under folders: by extension (in any case), hidden files left out
unless asked for, symlinked folders followed once."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

# The photo formats Pillow reads, under every name they go by (.jfif and .jpe are JPEG). AVIF
# needs Pillow's AVIF module (bundled in its wheels since 11.2); without it such files are left
# out rather than each reported as unreadable.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    | ({".avif"} if importlib.util.find_spec("PIL._avif") else set())
)


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the image extensions, ignoring case (``IMG_0001.JPG``)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def discover_images(root: Path, *, include_hidden: bool = False) -> list[Path]:
    """All image files under a folder, recursively, sorted.

    Paths are absolute but symlinks are kept as named, so results match what the user sees.
    Symlinked folders are followed once each; folders that cannot be read are skipped. A root
    that does not exist or is not a folder gives an empty list.
    """
    found: list[str] = []
    visited: set[tuple[int, int]] = set()
    pending = [os.path.abspath(root)]
    while pending:
        folder = pending.pop()
        try:
            info = os.stat(folder)
            # A symlink loop, or two links to one folder, leads back to a folder already seen.
            if (info.st_dev, info.st_ino) in visited:
                continue
            visited.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as scan:
                entries = list(scan)
        except OSError:
            continue  # permission denied, vanished while walking, not a folder
        for entry in sorted(entries, key=lambda e: e.name, reverse=True):
            if entry.name.startswith(".") and not include_hidden:
                continue
            try:
                if entry.is_dir():
                    pending.append(entry.path)
                elif entry.is_file() and is_image_name(entry.name):
                    found.append(entry.path)
            except OSError:
                continue  # e.g. a broken or unreadable symlink
    return [Path(p) for p in sorted(found)]


def expand_paths(paths: Sequence[Path], *, include_hidden: bool = False) -> list[Path]:
    """Command-line paths to image paths, in input order.

    A folder expands to its images (sorted); a file of any extension, or a path that does not
    exist, is passed through unchanged so that the caller can report it. A path reached twice
    (even spelled differently, ``a.jpg`` and ``./a.jpg``) is kept only at its first occurrence.
    """
    expanded: list[Path] = []
    seen: set[str] = set()
    for path in paths:
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
