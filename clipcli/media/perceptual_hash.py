"""The perceptual hash of a picture (pHash, 64 bits): close for copies of one picture however
they were resized or re-encoded, far for two pictures, even of one subject.

It is the hash imagehash's `phash` computes (a test compares the two bit for bit), in numpy
alone: grey levels, scaled to 32x32 with Lanczos, a 2-D DCT-II, the 8x8 lowest frequencies,
one bit each for whether it is above their median. The bits run row by row from the most
significant, as imagehash writes them in hex. SQLite's INTEGER is a signed 64-bit number, so
the hash is handed out and stored as one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from clipcli.media import decode

HASH_BITS = 64
_KEPT = 8  # frequencies kept per side
_SIDE = 4 * _KEPT  # the grid the DCT runs on: four times as fine as what it keeps
# A photo hashed from its file alone is decoded as an index run decodes it for the default
# model (ViT-B-32-256): a JPEG at a reduced DCT scale, both sides still at least this, so that
# its hash is the one the index run would have stored. For another model's scale a photo's
# hash moves by 0-2 bits, a flat drawing's by a few more (tests/media/test_perceptual_hash.py).
DECODE_SIZE = 256


def perceptual_hash(image: Image.Image) -> int:
    """The 64-bit pHash of a decoded image, as a signed 64-bit integer."""
    grey = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    basis = _dct_basis()
    low = (basis @ pixels @ basis.T)[:_KEPT, :_KEPT]
    bits = (low > np.median(low)).ravel()
    unsigned = int.from_bytes(np.packbits(bits).tobytes(), "big")
    return unsigned - (1 << HASH_BITS) if unsigned >> (HASH_BITS - 1) else unsigned


def file_perceptual_hash(path: Path) -> int:
    """The pHash of an image file, decoded as an index run decodes it; ImageDecodeError
    (with the reason) for a file that cannot be."""
    return perceptual_hash(decode.load_image(path, min_size=DECODE_SIZE))


def file_perceptual_hashes(paths: Sequence[Path]) -> list[int | None]:
    """file_perceptual_hash of each file, None for one that cannot be decoded; the files
    decode on a few threads, as when embedding (Pillow lets go of the GIL meanwhile)."""

    def hashed(path: Path) -> int | None:
        try:
            return file_perceptual_hash(path)
        except decode.ImageDecodeError:
            return None

    if len(paths) < 2:
        return [hashed(path) for path in paths]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(hashed, paths))


def hash_distance(first: int, second: int) -> int:
    """How many of the 64 bits differ (Hamming distance): 0 for one picture, about 32 for two
    unrelated ones."""
    return ((first ^ second) & ((1 << HASH_BITS) - 1)).bit_count()


@functools.cache
def _dct_basis() -> npt.NDArray[np.float64]:
    """The DCT-II as a matrix: row k holds cos(pi k (2n + 1) / 2N). Scipy's unnormalised DCT
    is twice this; a scale changes no bit, the median scaling with the coefficients."""
    k = np.arange(_SIDE).reshape(-1, 1)
    n = np.arange(_SIDE).reshape(1, -1)
    return np.cos(np.pi * k * (2 * n + 1) / (2 * _SIDE))
