"""Which file names are photos, by extension in any case: what Pillow reads, HEIF and AVIF, and
camera RAW files (read through the preview the camera embeds in them)."""

from __future__ import annotations

import importlib.util
import os

# The photo formats Pillow reads itself, under every name they go by (.jfif and .jpe are JPEG).
JPEG_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
PILLOW_EXTENSIONS: frozenset[str] = JPEG_EXTENSIONS | {
    ".png",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
}

# HEIF through pillow-heif (a dependency): .heic from phones, .hif from Fujifilm cameras.
HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif", ".hif"})

# AVIF needs Pillow's AVIF module (bundled in its wheels since 11.2); without it such files are
# left out rather than each reported as unreadable. find_spec looks without importing it.
AVIF_EXTENSIONS: frozenset[str] = (
    frozenset({".avif"}) if importlib.util.find_spec("PIL._avif") else frozenset()
)

RAW_EXTENSIONS: frozenset[str] = frozenset(
    {".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".rw2", ".raf"}
)

# A camera set to RAW+JPEG (or RAW+HEIF) writes both files under one name: the same photo, of
# which the developed one is the better picture of what the photographer kept.
RAW_TWIN_EXTENSIONS: frozenset[str] = JPEG_EXTENSIONS | HEIF_EXTENSIONS

IMAGE_EXTENSIONS: frozenset[str] = (
    PILLOW_EXTENSIONS | HEIF_EXTENSIONS | AVIF_EXTENSIONS | RAW_EXTENSIONS
)


def extension(name: str) -> str:
    """A file name's extension in lower case, with its dot (``IMG_0001.CR2`` gives ``.cr2``)."""
    return os.path.splitext(name)[1].lower()


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the image extensions, ignoring case (``IMG_0001.JPG``)."""
    return extension(name) in IMAGE_EXTENSIONS


def is_raw_name(name: str) -> bool:
    """Whether a file name is a camera RAW file's, ignoring case (``DSC_0042.NEF``)."""
    return extension(name) in RAW_EXTENSIONS
