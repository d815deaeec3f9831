"""Exports are calibrated and judged on photos: the user's own first, then shipped ones, then
drawn images, always the same number."""

from __future__ import annotations

import numpy as np
from conftest import make_image, own_fingerprint

from clipcli.encoders.calibration import (
    CALIBRATION_IMAGES,
    CAPTIONS,
    USER_PHOTOS,
    calibration_images,
)
from clipcli.encoders.export_cache import ExportFolder
from clipcli.encoders.pixels import PixelTransform
from clipcli.media.decode import load_image


def test_the_users_photos_come_first_and_files_that_do_not_decode_are_passed_over(tmp_path):
    photos = [make_image(tmp_path / f"{i}.png", (10 * i, 0, 0), (40, 30)) for i in range(3)]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    images = calibration_images(32, [photos[0], tmp_path / "broken.jpg", *photos[1:]])
    assert len(images) == CALIBRATION_IMAGES
    for image, photo in zip(images, photos, strict=False):
        assert np.array_equal(np.asarray(image), np.asarray(load_image(photo)))


def test_at_most_a_dozen_of_the_users_photos_are_taken(tmp_path):
    photos = [make_image(tmp_path / f"{i}.png", (i, i, i), (8, 8)) for i in range(20)]
    images = calibration_images(16, photos)
    taken = [image for image in images if image.size == (8, 8)]
    assert len(taken) == USER_PHOTOS and len(images) == CALIBRATION_IMAGES


def test_without_photos_the_shipped_ones_then_drawn_ones_fill_the_set():
    images = calibration_images(32)
    assert len(images) == CALIBRATION_IMAGES
    assert images[0].size == (512, 512)  # scikit-image's astronaut, a dev dependency
    assert images[-1].size == (32, 32)  # drawn at the model's size
    assert len(CAPTIONS) >= 20 and len(set(CAPTIONS)) == len(CAPTIONS)


def test_a_model_first_exported_by_index_is_calibrated_on_the_folders_photos(
    cli, vit_spec, photo_folder, tmp_path
):
    spec = own_fingerprint(vit_spec.pretrained, tmp_path, vit_spec.name)
    args = ["--model", spec.name, "--pretrained", spec.pretrained, "--index", tmp_path / "i"]
    assert cli("index", photo_folder, *args).exit_code == 0
    folder = ExportFolder.for_spec(spec)
    pixels, reference, captions = folder.calibration()
    assert len(pixels) == len(reference) == CALIBRATION_IMAGES
    assert len(captions) == len(CAPTIONS)
    transform = PixelTransform.from_dict(folder.read_meta()["pixels"])
    red = transform(load_image(photo_folder / "red.png"))
    assert any(np.allclose(red, calibrated, atol=1e-5) for calibrated in pixels[:5])
