"""The signature of a picture (PictureHash): its perceptual hash (pHash, 64 bits) and a grid
of its colours (4x4 cells, 48 bytes). Both are close for copies of one picture however they
were resized or re-encoded, and one of them far for two pictures, even of one subject.

The pHash is the hash imagehash's `phash` computes (a test compares the two bit for bit), in
numpy alone: grey levels, scaled to 32x32 with Lanczos, a 2-D DCT-II, the 8x8 lowest
frequencies, one bit each for whether it is above their median. The bits run row by row from
the most significant, as imagehash writes them in hex. SQLite's INTEGER is a signed 64-bit
number, so the hash is handed out and stored as one.

Grey levels alone cannot tell two drawings of one shape and colour, at one place and size,
on backgrounds of different colours (a blue disc on grey, the same disc on yellow-green):
their pHashes differ in 0-8 bits, as the disc's outline sets the signs of the low frequencies
on either. The colour grid, the picture's mean red, green and blue in each of 4x4 cells, is
what differs there: by 40-60 levels (of 255, on average over the 48 values), where copies
differ by under 3 (clipcli.dupes.COLOUR_LIMIT has the measurements).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # Pillow is imported where pictures are: the catalog reads signatures only
    from PIL import Image

HASH_BITS = 64
_KEPT = 8  # frequencies kept per side
_SIDE = 4 * _KEPT  # the grid the DCT runs on: four times as fine as what it keeps
GRID_SIDE = 4  # cells per side of the colour grid
COLOUR_BYTES = GRID_SIDE * GRID_SIDE * 3  # red, green, blue of each cell, row by row
# A photo hashed from its file alone is decoded as an index run decodes it for the default
# model (ViT-B-32-256): a JPEG at a reduced DCT scale, both sides still at least this, so that
# its hash is the one the index run would have stored. For another model's scale a photo's
# hash moves by 0-2 bits, a flat drawing's by a few more (tests/media/test_perceptual_hash.py).
DECODE_SIZE = 256


@dataclass(frozen=True)
class PictureHash:
    """What tells copies of one picture from two pictures: compare the pHashes with
    hash_distance, the colour grids with colour_difference."""

    phash: int  # signed 64-bit, as SQLite stores it
    colours: bytes  # COLOUR_BYTES: red, green, blue of each cell, row by row from the top left


def picture_hash(image: Image.Image) -> PictureHash:
    """The pHash and colour grid of a decoded image, both from its pixels as given."""
    return PictureHash(perceptual_hash(image), colour_grid(image))


def perceptual_hash(image: Image.Image) -> int:
    """The 64-bit pHash of a decoded image, as a signed 64-bit integer."""
    from PIL import Image

    grey = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    basis = _dct_basis()
    low = (basis @ pixels @ basis.T)[:_KEPT, :_KEPT]
    bits = (low > np.median(low)).ravel()
    unsigned = int.from_bytes(np.packbits(bits).tobytes(), "big")
    return unsigned - (1 << HASH_BITS) if unsigned >> (HASH_BITS - 1) else unsigned


def colour_grid(image: Image.Image) -> bytes:
    """The mean red, green and blue of each of 4x4 cells of a decoded image (a box filter:
    each pixel counts by the share of it a cell covers), 48 bytes."""
    from PIL import Image

    # Converting an RGB image copies it: a third of the time an 8-MP grid takes.
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb.resize((GRID_SIDE, GRID_SIDE), Image.Resampling.BOX).tobytes()


def file_picture_hash(path: Path) -> PictureHash:
    """The signature of an image file, decoded as an index run decodes it; ImageDecodeError
    (with the reason) for a file that cannot be."""
    from clipcli.media import decode

    return picture_hash(decode.load_image(path, min_size=DECODE_SIZE))


def file_picture_hashes(paths: Sequence[Path]) -> list[PictureHash | None]:
    """file_picture_hash of each file, None for one that cannot be decoded; the files
    decode on a few threads, as when embedding (Pillow lets go of the GIL meanwhile)."""
    from clipcli.media import decode

    def hashed(path: Path) -> PictureHash | None:
        try:
            return file_picture_hash(path)
        except decode.ImageDecodeError:
            return None

    if len(paths) < 2:
        return [hashed(path) for path in paths]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(hashed, paths))


def hash_distance(first: int, second: int) -> int:
    """How many of the 64 bits of two pHashes differ (Hamming distance): 0 for one picture,
    about 32 for two unrelated ones."""
    return ((first ^ second) & ((1 << HASH_BITS) - 1)).bit_count()


def colour_difference(first: bytes, second: bytes) -> float:
    """How far apart two colour grids are: the mean absolute difference of their 48 values,
    0 for one picture, 255 for black and white."""
    a = np.frombuffer(first, dtype=np.uint8).astype(np.int16)
    b = np.frombuffer(second, dtype=np.uint8).astype(np.int16)
    return float(np.abs(a - b).mean())


@functools.cache
def _dct_basis() -> npt.NDArray[np.float64]:
    """The DCT-II as a matrix: row k holds cos(pi k (2n + 1) / 2N). Scipy's unnormalised DCT
    is twice this; a scale changes no bit, the median scaling with the coefficients."""
    k = np.arange(_SIDE).reshape(-1, 1)
    n = np.arange(_SIDE).reshape(1, -1)
    return np.cos(np.pi * k * (2 * n + 1) / (2 * _SIDE))
