"""HEIF (HEIC) and AVIF photos, told apart by the brand in their first bytes: HEIF decoded by
pillow-heif, registered with Pillow the first time such a file is opened, AVIF by Pillow itself.

pillow-heif takes some 20 ms to import, which every start-up would pay were it registered up
front; most runs never meet a HEIC. It applies the HEIF rotation and mirroring (irot, imir) as it
decodes and sets the EXIF orientation it hands Pillow to 1, so that turning the photo upright by
its EXIF afterwards does not turn it twice.
"""

from __future__ import annotations

import threading

# The ftyp box opens an ISO base media file: 4 bytes of size, "ftyp", then the major brand.
HEADER_SIZE = 12

# mif1 and msf1 are the generic image and sequence brands; AVIF files may carry them too, and
# Pillow tries its AVIF reader before a registered HEIF one, which then declines such a file.
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

_lock = threading.Lock()
_registered = False


def container(head: bytes) -> str | None:
    """ "HEIF" or "AVIF" for the first HEADER_SIZE bytes of such a file, else None."""
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in _HEIF_BRANDS:
        return "HEIF"
    if brand in _AVIF_BRANDS:
        return "AVIF"
    return None


def register_heif_opener() -> bool:
    """Teach Pillow to open HEIF files, once per process; False when pillow-heif is missing."""
    global _registered
    if _registered:
        return True
    with _lock:
        if not _registered:
            try:
                import pillow_heif
            except ImportError:
                return False
            pillow_heif.register_heif_opener()
            _registered = True
    return True
