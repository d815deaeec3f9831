"""Camera-size test photos for the benchmarks: 8 MP JPEGs with texture, made on demand.

Flat colour would decode unrealistically fast; these mix multi-scale noise (foliage, sky), soft
gradients and a few solid objects, then go through JPEG at camera quality, so the files are
2-5 MB like a phone's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CAMERA_SIZE = (3264, 2448)  # 8 MP, 4:3


def _octave_noise(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Sum of upsampled random fields, coarse to fine: a cheap stand-in for natural texture."""
    width, height = size
    total = np.zeros((height, width, 3), dtype=np.float32)
    for cells, weight in [(4, 0.45), (16, 0.25), (64, 0.15), (256, 0.1), (1024, 0.05)]:
        small = rng.random((max(2, cells * height // width), cells, 3)).astype(np.float32)
        layer = Image.fromarray((small * 255).astype(np.uint8)).resize(size, Image.BICUBIC)
        total += weight * np.asarray(layer, dtype=np.float32)
    return total


def camera_photo(rng: np.random.Generator, size: tuple[int, int] = CAMERA_SIZE) -> Image.Image:
    """One textured, photo-like 8 MP image."""
    pixels = _octave_noise(rng, size)
    tint = rng.uniform(0.6, 1.4, size=3).astype(np.float32)
    image = Image.fromarray(np.clip(pixels * tint, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 8)):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        r = int(rng.integers(size[1] // 20, size[1] // 4))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=0.8))
    grain = rng.normal(0.0, 5.0, size=(size[1], size[0], 1)).astype(np.float32)  # sensor noise
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8))


def _draw(job: tuple[Path, int, int]) -> None:
    path, seed, i = job
    tmp = path.with_suffix(".tmp")
    camera_photo(np.random.default_rng([seed, i])).save(tmp, format="JPEG", quality=92)
    tmp.replace(path)


def ensure_photo_folder(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` camera JPEGs in `folder`, drawing only the ones not there yet, on every core."""
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"IMG_{i:04d}.JPG" for i in range(count)]
    jobs = [(path, seed, i) for i, path in enumerate(paths) if not path.exists()]
    if jobs:
        with ProcessPoolExecutor() as pool:
            list(pool.map(_draw, jobs))
    return paths
