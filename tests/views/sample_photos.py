"""Real photos for the views' tests: scikit-image's samples, which ship inside its wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES = ("chelsea", "astronaut", "coffee", "rocket", "stereo_motorcycle")


def sample_pixels(name: str) -> np.ndarray:
    import skimage.data

    pixels = getattr(skimage.data, name)()
    return pixels[0] if isinstance(pixels, tuple) else pixels  # a stereo pair: its left photo


def save_photo(name: str, path: Path) -> Path:
    """The sample photo `name` saved as a JPEG at `path` (its folder made first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample_pixels(name)).convert("RGB").save(path, "JPEG", quality=90)
    return path
