"""The picture hash: a pHash, imagehash's phash bit for bit in numpy alone, and a 4x4 grid of
the picture's colours; both close for copies of one photo however they were resized or
re-encoded, and one of them far for different pictures, even where grey levels agree."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import one_shape_on_backgrounds
from PIL import Image

from clipcli.dupes import COLOUR_LIMIT, HASH_LIMIT
from clipcli.media.decode import load_image
from clipcli.media.perceptual_hash import (
    COLOUR_BYTES,
    DECODE_SIZE,
    PictureHash,
    colour_difference,
    colour_grid,
    file_picture_hash,
    file_picture_hashes,
    hash_distance,
    perceptual_hash,
    picture_hash,
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


def photo_copies(image: Image.Image, folder: Path) -> list[Path]:
    """Copies of a photo resized to 1/7-4 times its size, or saved again as JPEG (quality
    60-95), PNG or WEBP."""
    width, height = image.size
    return [
        saved(image, folder / "q60.jpg", quality=60),
        saved(image, folder / "q95.jpg", quality=95),
        saved(image, folder / "copy.png"),
        saved(image, folder / "copy.webp", quality=80),
        saved(image.resize((width // 2, height // 2), Image.LANCZOS), folder / "half.jpg"),
        saved(image.resize((width // 7, height // 7), Image.LANCZOS), folder / "tiny.png"),
        saved(image.resize((width * 4, height * 4), Image.LANCZOS), folder / "big.jpg"),
    ]


@pytest.mark.parametrize("name", PHOTOS)
def test_resized_and_re_encoded_copies_of_a_photo_differ_in_at_most_2_bits(
    name: str, tmp_path: Path
) -> None:
    image = photo(name).convert("RGB")
    original = perceptual_hash(image)
    copies = photo_copies(image, tmp_path)
    assert max(hash_distance(original, file_picture_hash(path).phash) for path in copies) <= 2


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

    hashes = file_picture_hashes([good, empty, tmp_path / "gone.jpg", broken])

    assert hashes == [picture_hash(load_image(good, min_size=DECODE_SIZE)), None, None, None]


# --- the colour grid ------------------------------------------------------------------------------


def test_the_colour_grid_is_the_mean_red_green_and_blue_of_each_of_4x4_cells_row_by_row() -> None:
    cells = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(np.kron(cells, np.ones((5, 3, 1), dtype=np.uint8)))  # 12x20 px
    image.putpixel((0, 0), (0, 0, 0))  # one pixel of the 15 in the top left cell
    image.putpixel((1, 0), (30, 30, 30))

    grid = colour_grid(image)

    expected = cells.astype(np.float64)
    expected[0, 0] = (13 * expected[0, 0] + 30) / 15
    assert len(grid) == COLOUR_BYTES == 48
    assert np.abs(np.frombuffer(grid, dtype=np.uint8) - expected.ravel()).max() <= 0.5


def test_the_grid_of_a_grey_image_has_its_grey_in_each_channel() -> None:
    assert colour_grid(Image.new("L", (30, 17), 77)) == bytes([77] * 48)


def test_the_colour_difference_is_the_mean_absolute_difference_of_the_48_values() -> None:
    black, white = bytes(48), bytes([255] * 48)
    one_cell_redder = bytes([48, *[0] * 47])
    assert colour_difference(black, white) == colour_difference(white, black) == 255.0
    assert colour_difference(black, one_cell_redder) == 1.0
    assert colour_difference(white, white) == 0.0


def test_a_picture_hash_is_the_phash_and_colour_grid_of_one_decoded_image() -> None:
    image = photo("coffee")
    assert picture_hash(image) == PictureHash(perceptual_hash(image), colour_grid(image))


@pytest.mark.parametrize("name", PHOTOS)
def test_resized_and_re_encoded_copies_of_a_photo_differ_in_colour_by_under_2_levels(
    name: str, tmp_path: Path
) -> None:
    image = photo(name).convert("RGB")
    original = colour_grid(image)
    copies = photo_copies(image, tmp_path)
    differences = [colour_difference(original, file_picture_hash(p).colours) for p in copies]
    assert max(differences) < 2 < COLOUR_LIMIT  # 0.0-1.3 measured: the 1/7 size the most


def test_resized_and_re_encoded_copies_of_drawings_differ_in_colour_by_under_3_levels(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(11)
    differences = []
    for n in range(24):
        image = draw_shape(rng, size=(int(rng.integers(160, 640)), int(rng.integers(160, 640))))[0]
        scale = float(np.exp(rng.uniform(np.log(0.5), np.log(2))))
        resized = image.resize((int(image.width * scale), int(image.height * scale)), Image.LANCZOS)
        suffix, options = [(".jpg", {"quality": 60}), (".webp", {"quality": 60}), (".png", {})][
            n % 3
        ]
        copy = saved(resized, tmp_path / f"{n}{suffix}", **options)
        differences.append(colour_difference(colour_grid(image), file_picture_hash(copy).colours))
    assert max(differences) < 3 < COLOUR_LIMIT


def test_different_photos_differ_in_colour_by_25_levels_or_more() -> None:
    grids = [colour_grid(photo(name)) for name in PHOTOS]
    differences = [colour_difference(a, b) for i, a in enumerate(grids) for b in grids[i + 1 :]]
    assert min(differences) >= 25


def test_a_grey_version_of_a_colour_photo_is_an_edit_not_a_copy() -> None:
    for name in PHOTOS:
        image = photo(name).convert("RGB")
        assert colour_difference(colour_grid(image), colour_grid(image.convert("L"))) > COLOUR_LIMIT


@pytest.mark.parametrize("shape", ["circle", "ring", "square", "star"])
def test_one_shape_on_two_backgrounds_is_one_picture_in_grey_levels_but_far_apart_in_colour(
    shape: str,
) -> None:
    blue = (20, 40, 230)
    on_grey, on_yellow_green = one_shape_on_backgrounds(
        shape, blue, [(128, 128, 128), (154, 205, 50)]
    )

    first, second = picture_hash(on_grey), picture_hash(on_yellow_green)

    assert hash_distance(first.phash, second.phash) <= HASH_LIMIT
    assert colour_difference(first.colours, second.colours) > 4 * COLOUR_LIMIT
