"""Decoding image files to RGB, with a reason in the user's words when a file cannot be.

Nothing here prints or exits: a file that cannot be decoded raises ImageDecodeError, and the
caller decides whether to skip it, report it, or stop.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipcli.errors import ClipcliError
from clipcli.media import heif
from clipcli.media.formats import AVIF_EXTENSIONS, is_raw_name
from clipcli.media.raw import RawPreviewError, read_preview

# What Pillow and its plugins raise for damaged data. Deliberately specific, so that a bug in
# our own code (TypeError, AttributeError...) keeps its traceback instead of blaming the file.
_CORRUPT_DATA_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
# libheif and libavif report some damage as RuntimeError ("Missing or empty image item"); it
# counts as damage only in a file that is one of theirs.
_ISO_MEDIA_DATA_ERRORS = (*_CORRUPT_DATA_ERRORS, RuntimeError)

_EXIF_ORIENTATION = 0x0112
# How ImageOps.exif_transpose turns each EXIF orientation upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Modes whose samples go beyond 8 bits; Pillow's own convert("RGB") clips them instead of scaling.
_WIDE_INTEGER_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})

# How many times longer than the short side the long side of an image bound for a model may be.
# The model's transform scales the short side to its input size and keeps the centre square, so
# a 1-pixel strip 100,000 long (a few hundred bytes as a PNG) would first become 5 billion
# pixels; beyond this the ends of the long side, which the crop drops anyway, are cut first.
MODEL_ASPECT_LIMIT = 16

_BOMB_MESSAGE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


class ImageDecodeError(ClipcliError):
    """A file that cannot be decoded as an image; ``reason`` says why in words for the user."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def load_image(path: Path, min_size: int | None = None) -> Image.Image:
    """Decode one image to an RGB PIL image, raising ImageDecodeError(path, reason) on failure.

    Applies the EXIF orientation, takes the first frame of animations, scales 16-bit samples to
    8 bits and puts transparent areas on white. Decoding is complete when this returns, so a
    truncated file fails here rather than later inside a batch. HEIF (HEIC) and AVIF photos are
    known by their content, whatever their name; a camera RAW file (by its extension) gives the
    preview embedded in it, which needs rawpy (the `raw` extra).

    With `min_size`, a JPEG may be decoded at a reduced DCT scale (1/2, 1/4 or 1/8) as long as
    both sides stay at least `min_size`: an 8-MP photo bound for a 224-px model decodes several
    times faster, and the model's own resize still does the final, antialiased step. And an
    image whose long side is over MODEL_ASPECT_LIMIT times its short side keeps only the middle
    of the long side, that many times the short side: all that the model's centre crop takes.
    """
    # Everything happens with the file open: some plugins read lazily even after load().
    with open_image_file(path) as fp:
        if is_raw_name(os.fspath(path)):
            image = _decode_raw(path, min_size)  # rawpy reads the file by its name
        else:
            image = _decode(path, fp, min_size)
        if min_size:
            image = _middle_of_strip(image)
        try:
            return _to_rgb(image)
        except ValueError:
            raise ImageDecodeError(path, f"unsupported colour mode {image.mode}") from None


def pixel_count(path: Path) -> int:
    """How many pixels the image holds (width x height, whichever way up), read from its
    header without decoding it; a camera RAW file's embedded preview is decoded, its header
    being LibRaw's to read. ImageDecodeError for a file that is not an image one can open."""
    with open_image_file(path) as fp:
        if is_raw_name(os.fspath(path)):
            width, height = _decode_raw(path, None).size
            return width * height
        if heif.container(fp.read(heif.HEADER_SIZE)) == "HEIF":
            heif.register_heif_opener()  # a missing pillow-heif makes it unrecognised below
        fp.seek(0)
        try:
            with _pillow_quiet(), Image.open(fp) as image:
                width, height = image.size
        except (UnidentifiedImageError, Image.DecompressionBombError, *_ISO_MEDIA_DATA_ERRORS):
            raise ImageDecodeError(path, "not an image Pillow can open") from None
    return width * height


def open_image_file(path: Path) -> BinaryIO:
    """The file opened for reading, or ImageDecodeError with the reason it cannot be one."""
    # stat before open: opening a FIFO would block, and the checks give clearer reasons.
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ImageDecodeError(path, "is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError(path, "not a regular file")
        if info.st_size == 0:
            raise ImageDecodeError(path, "empty file (0 bytes)")
        return open(path, "rb")  # the caller closes it in a with-block
    except (FileNotFoundError, NotADirectoryError):
        raise ImageDecodeError(path, "no such file") from None
    except PermissionError:
        raise ImageDecodeError(path, "cannot read file (permission denied)") from None
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read file ({exc.strerror or exc})") from None


def _decode(path: Path, fp: BinaryIO, min_size: int | None = None) -> Image.Image:
    with _pillow_quiet():
        return _apply_orientation(_load(path, fp, min_size))


@contextlib.contextmanager
def _pillow_quiet() -> Iterator[None]:
    # Where a file is a little damaged (EXIF cut short, a TIFF tag past the end of the file)
    # Pillow skips what is missing with a warning, which Python would write to stderr with a
    # line of Pillow's source; the pixels are what count. Between 1x and 2x Pillow's pixel
    # limit it only warns too; such photos are fine to use. catch_warnings is process-wide;
    # under threads the worst case is that these "ignore" filters stay installed, which only
    # keeps more of Pillow's warnings quiet.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"PIL\.")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _load(path: Path, fp: BinaryIO, min_size: int | None = None) -> Image.Image:
    """The file's first frame, decoded as stored (not yet turned upright)."""
    head = fp.read(heif.HEADER_SIZE)
    fp.seek(0)
    container = heif.container(head)
    if container == "HEIF" and not heif.register_heif_opener():
        raise ImageDecodeError(path, "HEIF image, but pillow-heif (which decodes it) is missing")
    if container == "AVIF" and not AVIF_EXTENSIONS:
        raise ImageDecodeError(path, "AVIF image, but this Pillow cannot decode AVIF (11.2 can)")
    data_errors = _CORRUPT_DATA_ERRORS if container is None else _ISO_MEDIA_DATA_ERRORS
    try:
        image = Image.open(fp)
        if min_size and image.format == "JPEG":
            image.draft("RGB", (min_size, min_size))
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(path, _bomb_reason(exc)) from None
    except UnidentifiedImageError:
        if container is not None:
            # Its decoder gave up on it, and Pillow keeps the reason to itself.
            raise ImageDecodeError(path, f"truncated or corrupt {container} image") from None
        raise ImageDecodeError(path, "not an image (unrecognised format)") from None
    except MemoryError:
        # Sizes in a damaged header can ask for gigabytes (a PNG chunk says it is 2 GB
        # long, and Pillow reads it in one go): that file is unusable here, not the run.
        raise ImageDecodeError(path, "not enough memory to decode it") from None
    except data_errors as exc:
        reason = f"truncated or corrupt image data ({_one_line(exc)})"
        raise ImageDecodeError(path, reason) from None
    return image


def _decode_raw(path: Path, min_size: int | None) -> Image.Image:
    try:
        preview = read_preview(path)
    except RawPreviewError as exc:
        raise ImageDecodeError(path, str(exc)) from None
    if preview.bitmap is not None:
        return _turn(preview.bitmap, preview.orientation)
    with _pillow_quiet():
        try:
            image = _load(path, io.BytesIO(preview.jpeg or b""), min_size)
        except ImageDecodeError as exc:
            raise ImageDecodeError(path, f"embedded preview: {exc.reason}") from None
        # The preview's own EXIF orientation where it has one, else the RAW file's: not both.
        if _exif_orientation(image) in _UPRIGHT:
            return _apply_orientation(image)
    return _turn(image, preview.orientation)


def _apply_orientation(image: Image.Image) -> Image.Image:
    # Odd maker-note EXIF should not cost the user a photo whose pixels decoded fine.
    try:
        return ImageOps.exif_transpose(image)
    except _CORRUPT_DATA_ERRORS:
        return image


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except (*_CORRUPT_DATA_ERRORS, TypeError):
        return 1


def _turn(image: Image.Image, orientation: int) -> Image.Image:
    method = _UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)


def _one_line(exc: Exception) -> str:
    # libheif's messages end in a newline; a reason is printed on one line.
    return " ".join(str(exc).split())


def _middle_of_strip(image: Image.Image) -> Image.Image:
    width, height = image.size
    short, long = sorted(image.size)
    keep = short * MODEL_ASPECT_LIMIT
    if long <= keep:
        return image
    keep += (long - keep) % 2  # as much cut off either end, so the middle stays where it was
    cut = (long - keep) // 2
    return image.crop(
        (cut, 0, cut + keep, height) if width > height else (0, cut, width, cut + keep)
    )


def _bomb_reason(exc: Image.DecompressionBombError) -> str:
    match = _BOMB_MESSAGE.search(str(exc))
    if match is None:
        return f"decompression bomb: {exc}"
    pixels, limit = match.groups()
    return f"decompression bomb: {pixels} pixels is over Pillow's limit of {limit}"


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _WIDE_INTEGER_MODES:
        # 16-bit samples span 0..65535; dividing by 257 maps that range exactly onto 0..255.
        samples = np.asarray(image, dtype=np.float64) / 257.0
        grey = np.clip(np.rint(samples), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        # Float images have no agreed white point, so stretch what is there. NaN and the
        # infinities (a damaged file) take the ends of the finite range: left in, they made
        # every pixel NaN. A signalling NaN raises numpy's "invalid value" when cast; it is
        # one of the NaNs replaced here.
        with np.errstate(invalid="ignore"):
            samples = np.asarray(image, dtype=np.float64)
        finite = samples[np.isfinite(samples)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        samples = np.nan_to_num(samples, nan=low, posinf=high, neginf=low)
        scale = 255.0 / (high - low) if high > low else 0.0
        grey = np.rint((samples - low) * scale).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if {"A", "a"} & set(image.getbands()) or "transparency" in image.info:
        # Composite on white: CLIP sees a transparent logo as it looks on a page, not on black.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
