"""Camera RAW files, read through the preview the camera embeds in each: a JPEG (from a few
cameras a bitmap) developed as the camera showed it, at a small part of the cost of developing
the sensor data, and all that a photo search needs. rawpy (LibRaw) finds it: the `raw` extra."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

NO_PREVIEW_READER = "RAW without an embedded preview reader: pip install clipcli[raw]"

# LibRaw gives the camera's orientation as dcraw codes it, `flip`: bit 2 swaps the axes, bits 0
# and 1 mirror them. dcraw's own table turns it into the EXIF orientation it writes beside a
# JPEG preview; the same table here serves a preview that carries none.
_EXIF_ORIENTATION_OF_FLIP = (1, 2, 4, 3, 5, 8, 6, 7)


class RawPreviewError(Exception):
    """A RAW file whose preview cannot be had; the message is the reason, in the user's words."""


@dataclass(frozen=True)
class RawPreview:
    """The embedded preview as a JPEG file or as pixels, and how to turn the photo upright."""

    jpeg: bytes | None
    bitmap: Image.Image | None
    # As an EXIF orientation (1 is as stored). LibRaw writes it into a JPEG preview that has no
    # EXIF of its own; one that has keeps its own, which then decides.
    orientation: int


def read_preview(path: Path) -> RawPreview:
    """The preview embedded in the RAW file at `path`, or RawPreviewError saying why not."""
    try:
        import rawpy
    except ImportError:
        raise RawPreviewError(NO_PREVIEW_READER) from None
    except (ValueError, OSError) as exc:
        # e.g. a rawpy built for numpy 1 under numpy 2: "numpy.dtype size changed".
        raise RawPreviewError(f"rawpy is installed but does not load ({exc})") from None
    try:
        with rawpy.imread(str(path)) as raw:
            thumb = raw.extract_thumb()
            flip = raw.sizes.flip
    except rawpy.LibRawNoThumbnailError:
        raise RawPreviewError("RAW file without an embedded preview") from None
    except rawpy.LibRawUnsupportedThumbnailError:
        raise RawPreviewError(
            "RAW file whose embedded preview is in an unreadable format"
        ) from None
    except rawpy.LibRawFileUnsupportedError:
        raise RawPreviewError("not a RAW file LibRaw reads (another format, or damaged)") from None
    except rawpy.LibRawIOError:
        raise RawPreviewError("truncated or unreadable RAW file") from None
    except rawpy.LibRawError as exc:
        raise RawPreviewError(f"cannot read RAW file ({_text(exc)})") from None
    except MemoryError:
        raise RawPreviewError("not enough memory to decode it") from None
    orientation = _EXIF_ORIENTATION_OF_FLIP[flip] if 0 <= flip < 8 else 1
    if isinstance(thumb.data, bytes):
        return RawPreview(jpeg=thumb.data, bitmap=None, orientation=orientation)
    return RawPreview(jpeg=None, bitmap=_bitmap(thumb.data), orientation=orientation)


def _bitmap(samples: np.ndarray) -> Image.Image:
    samples = np.asarray(samples)
    if samples.ndim == 3 and samples.shape[2] == 1:
        samples = samples[..., 0]  # a greyscale preview
    if samples.dtype != np.uint8:
        samples = (samples.astype(np.uint32) >> 8).astype(np.uint8)  # 16-bit samples
    return Image.fromarray(np.ascontiguousarray(samples))


def _text(exc: Exception) -> str:
    # rawpy's messages are LibRaw's, as bytes: b'Input/output error'.
    message = exc.args[0] if exc.args else exc
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)
