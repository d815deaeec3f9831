"""Thumbnails for the views: decoded as indexing decodes (reduced-scale JPEG, EXIF orientation,
transparency on white), at most THUMBNAIL_SIZE px on the long side, and cached per file content
hash, so a photo renamed or copied keeps its thumbnail and an edited one gets a new one."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from PIL import Image

from clipcli.atomic_files import write_file
from clipcli.errors import ClipcliError
from clipcli.media.decode import ImageDecodeError, load_image, open_image_file
from clipcli.media.hashing import stream_sha256
from clipcli.settings import cache_dir

THUMBNAIL_SIZE = 256
JPEG_QUALITY = 85
# Bumped when the way thumbnails are drawn changes, so old ones are not shown.
THUMBNAIL_VERSION = 1


def thumbnail_jpeg(path: Path, size: int = THUMBNAIL_SIZE, sha256: str | None = None) -> bytes:
    """A JPEG of the image at `path`, its long side at most `size` px, from the cache when it
    holds one for this content; `sha256` is the file's hash when the caller knows it already.

    Raises ImageDecodeError (path, reason) for a file that cannot be read as an image. A cache
    that cannot be written costs only the time to draw the thumbnail again next time.
    """
    if sha256 is None:
        try:
            with open_image_file(path) as handle:  # a FIFO or a folder is refused, not read
                sha256 = stream_sha256(handle)
        except OSError as exc:
            raise ImageDecodeError(path, f"cannot read file ({exc.strerror or exc})") from None
    cached = _cache_path(sha256, size)
    with contextlib.suppress(OSError):
        return cached.read_bytes()
    data = _encode_jpeg(draw_thumbnail(path, size))
    _store(cached, data)
    return data


def thumbnail(path: Path, size: int = THUMBNAIL_SIZE, sha256: str | None = None) -> Image.Image:
    """The cached thumbnail as an RGB image (see thumbnail_jpeg)."""
    with Image.open(io.BytesIO(thumbnail_jpeg(path, size, sha256))) as image:
        return image.convert("RGB")


def draw_thumbnail(path: Path, size: int = THUMBNAIL_SIZE) -> Image.Image:
    """The thumbnail itself, uncached: the reduced-scale decode, then an antialiased resize."""
    image = load_image(path, min_size=size)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def _encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def thumbnail_root() -> Path:
    return cache_dir() / "thumbnails"


def _cache_path(digest: str, size: int) -> Path:
    folder = thumbnail_root() / f"v{THUMBNAIL_VERSION}-{size}" / digest[:2]
    return folder / f"{digest}.jpg"


def _store(path: Path, data: bytes) -> None:
    """Best effort: a cache that cannot be written costs only drawing the thumbnail again."""
    with contextlib.suppress(OSError, ClipcliError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, data, what="the thumbnail")
