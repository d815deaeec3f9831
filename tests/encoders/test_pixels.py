"""The torch-free pixel transform: open_clip's evaluation transform, value for value."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipcli.encoders.choose import load_encoder
from clipcli.encoders.pixels import PixelTransform
from clipcli.models.names import BUNDLED_WEIGHTS, ModelSpec

SIZES = [(64, 64), (301, 173), (97, 640), (40, 30), (65, 64), (3, 500), (1200, 800)]


@pytest.fixture(scope="module")
def shapes_encoder():
    spec = ModelSpec("clipcli-shapes", str(BUNDLED_WEIGHTS["clipcli-shapes"]))
    return load_encoder(spec, "cpu", "fp32")  # open_clip's own preprocessing and image tower


def test_pixels_equal_open_clips_preprocess_at_awkward_sizes(shapes_encoder):
    from open_clip import get_model_preprocess_cfg

    transform = PixelTransform.from_open_clip(get_model_preprocess_cfg(shapes_encoder.model))
    assert transform is not None
    rng = np.random.default_rng(0)
    for width, height in SIZES:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        expected = shapes_encoder.preprocess(image).numpy()
        np.testing.assert_array_equal(transform(image), expected)


def test_transforms_it_does_not_reproduce_are_declined():
    base = {"size": 224, "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic"}
    assert PixelTransform.from_open_clip(base) == PixelTransform(
        224, (0.5,) * 3, (0.5,) * 3, "bicubic"
    )
    assert PixelTransform.from_open_clip({**base, "resize_mode": "squash"}) is None
    assert PixelTransform.from_open_clip({**base, "size": (224, 320)}) is None
    assert PixelTransform.from_open_clip({**base, "interpolation": "lanczos"}) is None


def test_a_transform_survives_its_round_trip_through_export_json():
    transform = PixelTransform(256, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bilinear")
    assert PixelTransform.from_dict(transform.to_dict()) == transform
