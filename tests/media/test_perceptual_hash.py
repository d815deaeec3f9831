"""The perceptual hash: imagehash's phash bit for bit, in numpy alone; close for copies of one
photo however they were resized or re-encoded, far for different photos."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipcli.media.decode import load_image
from clipcli.media.perceptual_hash import (
    DECODE_SIZE,
    file_perceptual_hash,
    file_perceptual_hashes,
    hash_distance,
    perceptual_hash,
)
from clipcli.shapes import draw_shape

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "motorcycle")


def photo(name: str) -> Image.Image:
    import skimage.data

    if name == "motorcycle":
        return Image.fromarray(skimage.data.stereo_motorcycle()[0])
    return Image.fromarray(getattr(skimage.data, name)())


def imagehash_phash(image: Image.Image) -> int:
    """imagehash's phash as the signed 64-bit integer its hex digits spell, first bit highest."""
    import imagehash

    unsigned = int(str(imagehash.phash(image)), 16)
    return unsigned - (1 << 64) if unsigned >> 63 else unsigned


def shape_images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    sizes = [(64, 64), (200, 120), (333, 500), (640, 480)]
    return [draw_shape(rng, size=size)[0] for size in sizes]


def saved(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, **options)
    return path


@pytest.mark.parametrize("name", PHOTOS)
def test_the_hash_of_a_photo_is_imagehash_phash(name: str) -> None:
    image = photo(name)
    assert hash_distance(perceptual_hash(image), imagehash_phash(image)) <= 1


def test_the_hash_of_shape_drawings_and_of_grey_and_odd_sized_images_is_imagehash_phash() -> None:
    images = [*shape_images(), photo("coffee").convert("L"), photo("rocket").resize((37, 901))]
    for image in images:
        assert hash_distance(perceptual_hash(image), imagehash_phash(image)) <= 1


def test_a_hash_is_a_signed_64_bit_integer_as_sqlite_stores_one() -> None:
    hashes = [perceptual_hash(photo(name)) for name in PHOTOS] + [
        perceptual_hash(image) for image in shape_images()
    ]
    assert all(-(2**63) <= h < 2**63 for h in hashes)
    assert any(h < 0 for h in hashes)  # the top bit set: stored negative, not overflowing
    assert all(hash_distance(h, h) == 0 for h in hashes)


def test_the_distance_counts_the_bits_that_differ_sign_bit_included() -> None:
    assert hash_distance(0, 0b1011) == 3
    assert hash_distance(-1, 0) == 64
    assert hash_distance(-(2**63), 0) == 1


@pytest.mark.parametrize("name", PHOTOS)
def test_resized_and_re_encoded_copies_of_a_photo_differ_in_at_most_2_bits(
    name: str, tmp_path: Path
) -> None:
    image = photo(name).convert("RGB")
    original = perceptual_hash(image)
    width, height = image.size
    copies = [
        saved(image, tmp_path / "q60.jpg", quality=60),
        saved(image, tmp_path / "q95.jpg", quality=95),
        saved(image, tmp_path / "copy.png"),
        saved(image, tmp_path / "copy.webp", quality=80),
        saved(image.resize((width // 2, height // 2), Image.LANCZOS), tmp_path / "half.jpg"),
        saved(image.resize((width // 7, height // 7), Image.LANCZOS), tmp_path / "tiny.png"),
        saved(image.resize((width * 4, height * 4), Image.LANCZOS), tmp_path / "big.jpg"),
    ]
    assert max(hash_distance(original, file_perceptual_hash(path)) for path in copies) <= 2


def test_a_jpeg_decoded_at_a_reduced_scale_hashes_as_decoded_in_full(tmp_path: Path) -> None:
    # Indexing decodes a JPEG at 1/2 to 1/8 scale for the model: the hash barely sees it.
    for name in PHOTOS:
        image = photo(name).convert("RGB")
        big = saved(image.resize((image.width * 4, image.height * 4)), tmp_path / "big.jpg")
        full = perceptual_hash(load_image(big))
        for size in (64, 224, DECODE_SIZE):
            assert hash_distance(full, perceptual_hash(load_image(big, min_size=size))) <= 2


def test_different_photos_differ_in_a_quarter_of_the_bits_or_more() -> None:
    hashes = [perceptual_hash(photo(name)) for name in PHOTOS]
    distances = [hash_distance(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distances) >= 16


def test_a_photo_cropped_by_a_tenth_is_not_a_copy_of_it() -> None:
    from clipcli.dupes import HASH_LIMIT

    for name in PHOTOS:
        image = photo(name)
        cropped = image.crop((image.width // 10, 0, image.width, image.height))
        assert hash_distance(perceptual_hash(image), perceptual_hash(cropped)) > HASH_LIMIT


def test_files_that_do_not_decode_have_no_hash(tmp_path: Path) -> None:
    good = saved(photo("chelsea"), tmp_path / "cat.png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    broken = tmp_path / "broken.png"
    buffer = io.BytesIO()
    photo("coffee").save(buffer, format="PNG")
    broken.write_bytes(buffer.getvalue()[:200])

    hashes = file_perceptual_hashes([good, empty, tmp_path / "gone.jpg", broken])

    assert hashes == [perceptual_hash(load_image(good, min_size=DECODE_SIZE)), None, None, None]
