"""What an export is calibrated and judged on: photos and captions.

Synthetic images flatter an approximation: a smooth colour field has none of the edges,
textures and outlier activations of a photo. So calibration takes the user's own photos first
(index and classify pass the first files of the job), then the photos scikit-image ships where
it is installed, and only then fills up with drawn images so that every export has enough.
Captions are what images are ranked against: the gate's top-5 and label agreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

# Enough images that a top-5 means something and the worst case is a real worst case; the
# quantiser's checks run every one of them through each candidate graph.
CALIBRATION_IMAGES = 24
USER_PHOTOS = 12
SHIPPED_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "hubble_deep_field",
)
CAPTIONS = (
    "a photo of a cat",
    "a photo of a dog",
    "a photo of a person",
    "a group of people at a party",
    "an astronaut in a space suit",
    "a cup of coffee on a table",
    "a rocket on the launch pad",
    "a motorcycle parked in a garage",
    "galaxies in the night sky",
    "a plate of food",
    "a city street at night",
    "a beach at sunset",
    "a snowy mountain",
    "a forest in autumn",
    "a car on the road",
    "a screenshot of a document",
    "a drawing of a circle",
    "a drawing of a star",
    "a colourful abstract painting",
    "a blurry photo",
    "a black and white photo",
    "a close-up of a flower",
    "a birthday cake with candles",
    "a baby sleeping",
)


def calibration_images(
    size: int, photos: Sequence[Path] = (), count: int = CALIBRATION_IMAGES
) -> list[Image.Image]:
    """Up to USER_PHOTOS of `photos` that decode, the shipped photos, then drawn images, `count`
    in all."""
    images = _decodable(photos, USER_PHOTOS) + _shipped_photos()
    return (images + drawn_images(size, max(count - len(images), 0)))[:count]


def _decodable(photos: Sequence[Path], limit: int) -> list[Image.Image]:
    from clipcli.media.decode import load_image

    found = []
    for path in photos:
        if len(found) >= limit:
            break
        try:
            found.append(load_image(path))
        except Exception:  # a file that does not decode is the index's to report, not ours
            continue
    return found


def _shipped_photos() -> list[Image.Image]:
    """scikit-image's sample photos, where it is installed (it is not a dependency)."""
    try:
        from skimage import data
    except ImportError:
        return []
    from PIL import Image

    images = []
    for name in SHIPPED_PHOTOS:
        try:
            pixels = getattr(data, name)()
        except Exception:  # an older release without this one
            continue
        images.append(Image.fromarray(pixels).convert("RGB"))
    return images


def drawn_images(size: int, count: int) -> list[Image.Image]:
    """Photo-like images (smooth colour fields with fine grain) alternating with drawings of
    solid shapes: the two extremes of what people index, when no photos are at hand."""
    from PIL import Image

    from clipcli.shapes import draw_shape

    rng = np.random.default_rng(0)
    images = []
    for index in range(count):
        if index % 2:
            images.append(draw_shape(rng, size=(size, size))[0])
            continue
        coarse = Image.fromarray((rng.random((6, 6, 3)) * 255).astype(np.uint8))
        smooth = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float32)
        grain = rng.normal(0.0, 12.0, smooth.shape)
        images.append(Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)))
    return images
