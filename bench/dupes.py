"""`clipcli dupes` at scale: a catalog of synthetic photos, near-duplicates among them, grouped
the way the command groups them (bench/run.py turns the figures into rows).

The vectors are unrelated photos (a Gaussian mixture on the unit sphere, as bench/run.py's
search benchmarks draw them: photos of many subjects) and copies of some of them, each a
little noise away from its original (cosine 0.96-0.99, as resized and re-encoded copies
score). Each photo has a picture hash: a copy's pHash differs from its original's in a few
bits, its colour grid by a level or two in each value. The files exist (a byte each), so that
the command finds them there; their hashes are stored, so nothing is decoded: what is timed is
the range search, the checks and the grouping.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DupesTiming:
    photos: int
    copies: int  # copies of an original among the photos
    seconds: float  # find_duplicates on a warm index, as `clipcli dupes` runs it
    groups: int
    recall: float  # of the copies, the share grouped with their original
    wrong: int  # photos grouped with a photo that is not their original or its copy


def near_duplicate_vectors(
    count: int, dim: int, copies: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`count` unit vectors, the last `copies` of them copies of earlier ones; and for each
    vector the row of its original (itself for an original)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    originals = count - copies
    vectors = np.empty((count, dim), dtype=np.float32)
    chunk = centres[rng.integers(0, len(centres), originals)]
    chunk += rng.standard_normal((originals, dim), dtype=np.float32) * (0.6 / np.sqrt(dim))
    vectors[:originals] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    source = rng.integers(0, originals, copies)
    spread = rng.uniform(0.1, 0.28, (copies, 1)).astype(np.float32) / np.sqrt(dim)
    noisy = vectors[source] + rng.standard_normal((copies, dim), dtype=np.float32) * spread
    vectors[originals:] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return vectors, np.concatenate([np.arange(originals), source])


def time_dupes(count: int = 100_000, dim: int = 512, copies: int = 20_000) -> DupesTiming:
    from clipcli.dupes import find_duplicates
    from clipcli.media.perceptual_hash import COLOUR_BYTES, PictureHash
    from clipcli.store import vector_index
    from clipcli.store.catalog import Catalog
    from clipcli.store.catalog_records import NewImage

    vectors, original = near_duplicate_vectors(count, dim, copies, seed=0)
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**64 - 1, count, dtype=np.uint64, endpoint=True)
    bits = np.uint64(1) << rng.integers(0, 64, (copies, 3)).astype(np.uint64)
    hashes[count - copies :] = hashes[original[count - copies :]] ^ np.bitwise_or.reduce(bits, 1)
    signed = hashes.view(np.int64)  # as the catalog stores a hash
    colours = rng.integers(0, 256, (count, COLOUR_BYTES), dtype=np.int16)
    shift = rng.integers(-2, 3, (copies, COLOUR_BYTES))
    colours[count - copies :] = np.clip(colours[original[count - copies :]] + shift, 0, 255)
    grids = colours.astype(np.uint8)
    pictures = [PictureHash(int(signed[n]), grids[n].tobytes()) for n in range(count)]
    with tempfile.TemporaryDirectory() as scratch:
        photos, folder = Path(scratch) / "photos", Path(scratch) / "index"
        photos.mkdir()
        paths = [photos / f"{n:06d}.jpg" for n in range(count)]
        for path in paths:
            path.write_bytes(b"\0")
        with Catalog(folder) as catalog:
            for start in range(0, count, 10_000):
                catalog.add(
                    NewImage(str(paths[n]), 1, n, f"{n:064x}", vectors[n], None, pictures[n])
                    for n in range(start, min(start + 10_000, count))
                )
            vector_index.refresh(folder, catalog)  # the index run's part
        started = time.perf_counter()
        report = find_duplicates(folder)
        seconds = time.perf_counter() - started
    row = {str(path): n for n, path in enumerate(paths)}
    recalled = wrong = 0
    for group in report.groups:
        members = {row[group.keeper], *(row[path] for path in group.extras)}
        if len({int(original[n]) for n in members}) > 1:
            wrong += len(members)
        recalled += sum(1 for n in members if n >= count - copies and original[n] in members)
    return DupesTiming(count, copies, seconds, len(report.groups), recalled / copies, wrong)
