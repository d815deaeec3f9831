"""Specification of image discovery and decoding: every image is drawn here, into tmp_path."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from clipcli.encoders.pixels import PixelTransform
from clipcli.errors import ClipcliError
from clipcli.media.decode import MODEL_ASPECT_LIMIT, ImageDecodeError, load_image
from clipcli.media.discover import IMAGE_EXTENSIONS, discover_images, expand_paths

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
EXIF_ORIENTATION = 0x0112
RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def save(image: Image.Image, path: Path, **params: object) -> Path:
    """Write an image, making its folder first; returns the path for chaining."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def touch_image(path: Path) -> Path:
    """A tiny valid image at path; discovery tests only care that it exists."""
    return save(Image.new("RGB", (2, 2), RED), path, format="PNG")


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 8) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), actual


def decode_error(path: Path) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as caught:
        load_image(path)
    return caught.value


# --- decoding -------------------------------------------------------------------------------


def test_plain_rgb_jpeg_keeps_size_and_colour(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (32, 16), BLUE), tmp_path / "blue.jpg", quality=95)
    image = load_image(path)
    assert (image.mode, image.size) == ("RGB", (32, 16))
    assert_close(image.getpixel((16, 8)), BLUE)


def test_exif_rotated_jpeg_is_turned_upright(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high with a red marker top-left; orientation 6 means "display rotated
    # 90 degrees clockwise", which puts the marker top-right in a 20 x 40 picture.
    stored = Image.new("RGB", (40, 20), WHITE)
    stored.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = save(stored, tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)

    image = load_image(path)

    assert image.size == (20, 40)
    assert_close(image.getpixel((15, 4)), RED, tolerance=40)
    assert_close(image.getpixel((4, 4)), WHITE, tolerance=40)


def test_cmyk_jpeg_decodes_to_rgb(tmp_path: Path) -> None:
    path = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "print.jpg")
    assert Image.open(path).mode == "CMYK"
    image = load_image(path)
    assert image.mode == "RGB"
    assert_close(image.getpixel((8, 8)), RED, tolerance=12)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path: Path, suffix: str) -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))
    path = save(Image.fromarray(ramp), tmp_path / f"scan{suffix}")
    assert Image.open(path).mode in {"I;16", "I;16B", "I"}

    grey = np.asarray(load_image(path))[..., 0]

    assert grey.min() <= 1
    assert grey.max() >= 254
    assert abs(int(grey[0, 128]) - 128) <= 2  # mid-ramp stays mid-grey


def test_transparent_rgba_pixels_become_white(tmp_path: Path) -> None:
    source = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    source.putpixel((1, 1), (*GREEN, 255))
    image = load_image(save(source, tmp_path / "logo.png"))
    assert image.mode == "RGB"
    assert image.getpixel((5, 5)) == WHITE
    assert image.getpixel((1, 1)) == GREEN


def test_transparent_greyscale_with_alpha_becomes_white(tmp_path: Path) -> None:
    source = Image.new("LA", (8, 8), (0, 0))
    source.putpixel((1, 1), (0, 255))
    image = load_image(save(source, tmp_path / "mask.png"))
    assert image.getpixel((5, 5)) == WHITE
    assert image.getpixel((1, 1)) == (0, 0, 0)


def test_palette_image_without_transparency_keeps_its_colours(tmp_path: Path) -> None:
    source = Image.new("P", (8, 8), 1)
    source.putpalette([*RED, *BLUE] + [0] * (256 - 2) * 3)
    source.putpixel((0, 0), 0)
    image = load_image(save(source, tmp_path / "palette.png"))
    assert image.getpixel((0, 0)) == RED
    assert image.getpixel((4, 4)) == BLUE


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_transparency_becomes_white(tmp_path: Path, suffix: str) -> None:
    source = Image.new("P", (8, 8), 0)
    source.putpalette([*BLUE, *RED] + [0] * (256 - 2) * 3)
    source.putpixel((2, 2), 1)
    path = save(source, tmp_path / f"sticker{suffix}", transparency=0)
    image = load_image(path)
    assert image.getpixel((6, 6)) == WHITE
    assert image.getpixel((2, 2)) == RED


def animation(colours: list[tuple[int, int, int]]) -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), colour) for colour in colours]


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    first, *rest = animation([RED, GREEN, BLUE])
    path = save(first, tmp_path / "anim.gif", save_all=True, append_images=rest, duration=50)
    assert Image.open(path).n_frames == 3
    assert load_image(path).getpixel((8, 8)) == RED


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_animated_webp_gives_its_first_frame(tmp_path: Path) -> None:
    first, *rest = animation([GREEN, BLUE])
    path = save(first, tmp_path / "anim.webp", save_all=True, append_images=rest, lossless=True)
    assert Image.open(path).n_frames == 2
    assert_close(load_image(path).getpixel((8, 8)), GREEN, tolerance=2)


def test_greyscale_image_becomes_grey_rgb(tmp_path: Path) -> None:
    image = load_image(save(Image.new("L", (8, 8), 77), tmp_path / "grey.png"))
    assert image.mode == "RGB"
    assert image.getpixel((3, 3)) == (77, 77, 77)


def test_one_bit_bitmap_becomes_black_and_white(tmp_path: Path) -> None:
    source = Image.new("1", (8, 8), 0)
    source.putpixel((7, 7), 1)
    image = load_image(save(source, tmp_path / "fax.bmp"))
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((7, 7)) == WHITE


# --- decoding failures ----------------------------------------------------------------------


def test_decode_error_is_a_clipcli_error_naming_the_file(tmp_path: Path) -> None:
    error = decode_error(tmp_path / "gone.jpg")
    assert isinstance(error, ClipcliError)
    assert error.path == tmp_path / "gone.jpg"
    assert str(error) == f"{tmp_path / 'gone.jpg'}: {error.reason}"


def test_missing_file_is_reported(tmp_path: Path) -> None:
    error = decode_error(tmp_path / "gone.jpg")
    assert error.reason.startswith("no such file")
    assert "gone.jpg" in str(error)


def test_directory_given_as_a_file_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "album.jpg"
    folder.mkdir()
    error = decode_error(folder)
    assert error.reason.startswith("is a directory")
    assert "album.jpg" in str(error)


def test_empty_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    error = decode_error(path)
    assert error.reason.startswith("empty file (0 bytes)")
    assert "empty.png" in str(error)


def test_text_with_an_image_extension_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, eggs\n")
    error = decode_error(path)
    assert error.reason.startswith("not an image (unrecognised format)")
    assert "notes.jpg" in str(error)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_is_reported_as_corrupt(tmp_path: Path, suffix: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    whole = save(Image.fromarray(noise), tmp_path / f"whole{suffix}")
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    error = decode_error(path)

    assert error.reason.startswith("truncated or corrupt image data")
    assert f"cut{suffix}" in str(error)


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = save(Image.new("RGB", (20, 20), RED), tmp_path / "bomb.png")
    error = decode_error(path)
    assert error.reason == "decompression bomb: 400 pixels is over Pillow's limit of 200"
    assert "bomb.png" in str(error)


def test_image_just_over_the_warning_size_loads_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = save(Image.new("RGB", (12, 12), RED), tmp_path / "big.png")  # 144: warns, no error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(path)
    assert image.size == (12, 12)


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root can read files whatever their permissions")
def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    path = touch_image(tmp_path / "private.png")
    path.chmod(0)
    try:
        error = decode_error(path)
    finally:
        path.chmod(0o644)
    assert error.reason.startswith("cannot read file (permission denied)")
    assert "private.png" in str(error)


# --- discovery ------------------------------------------------------------------------------


PILLOW_READS_AVIF = ".avif" in Image.registered_extensions()


def test_image_extensions_are_lowercase_with_a_dot() -> None:
    expected = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif"}
    expected |= {".tiff", ".heic", ".heif", ".hif"}
    expected |= {".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".rw2", ".raf"}
    assert expected == IMAGE_EXTENSIONS - {".avif"}
    assert (".avif" in IMAGE_EXTENSIONS) == PILLOW_READS_AVIF


@pytest.mark.parametrize(
    "suffix",
    [
        ".jfif",
        ".jpe",
        pytest.param(
            ".avif", marks=pytest.mark.skipif(not PILLOW_READS_AVIF, reason="Pillow without AVIF")
        ),
    ],
)
def test_other_names_of_jpeg_and_avif_photos_are_found_and_decoded(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"photo{suffix.upper()}"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path, Image.registered_extensions()[suffix])

    assert discover_images(tmp_path) == [path]
    image = load_image(path)
    assert image.size == (40, 30)
    assert np.abs(np.asarray(image, dtype=int)[15, 20] - (200, 30, 30)).max() < 16


def test_discovery_is_recursive_and_sorted_by_path(tmp_path: Path) -> None:
    for name in ["b/2.png", "a/z/3.webp", "c.jpg", "a/1.jpeg", "a.gif"]:
        touch_image(tmp_path / name)
    found = discover_images(tmp_path)
    assert found == sorted(found, key=str)
    assert found == [
        tmp_path / name for name in ["a.gif", "a/1.jpeg", "a/z/3.webp", "b/2.png", "c.jpg"]
    ]


def test_discovery_returns_absolute_paths_for_a_relative_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch_image(tmp_path / "photos" / "cat.png")
    monkeypatch.chdir(tmp_path)
    assert discover_images(Path("photos")) == [tmp_path / "photos" / "cat.png"]


def test_discovery_matches_extensions_ignoring_case(tmp_path: Path) -> None:
    touch_image(tmp_path / "IMG_0001.JPG")
    touch_image(tmp_path / "Scan.TiFF")
    assert discover_images(tmp_path) == [tmp_path / "IMG_0001.JPG", tmp_path / "Scan.TiFF"]


def test_discovery_ignores_other_files(tmp_path: Path) -> None:
    touch_image(tmp_path / "photo.png")
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "README").write_text("no extension")
    (tmp_path / "jpg").mkdir()  # a folder named like an extension holds nothing
    assert discover_images(tmp_path) == [tmp_path / "photo.png"]


def test_hidden_files_and_folders_are_skipped_unless_asked_for(tmp_path: Path) -> None:
    touch_image(tmp_path / "visible.png")
    touch_image(tmp_path / ".hidden.png")
    touch_image(tmp_path / ".private" / "small.png")

    assert discover_images(tmp_path) == [tmp_path / "visible.png"]
    assert discover_images(tmp_path, include_hidden=True) == [
        tmp_path / ".hidden.png",
        tmp_path / ".private" / "small.png",
        tmp_path / "visible.png",
    ]


def test_symlinked_folders_are_followed_without_resolving_the_path(tmp_path: Path) -> None:
    touch_image(tmp_path / "elsewhere" / "trip.jpg")
    root = tmp_path / "library"
    root.mkdir()
    (root / "holiday").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert discover_images(root) == [root / "holiday" / "trip.jpg"]


def test_symlink_loop_terminates_and_lists_each_image_once(tmp_path: Path) -> None:
    touch_image(tmp_path / "top.png")
    touch_image(tmp_path / "sub" / "inner.png")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert discover_images(tmp_path) == [tmp_path / "sub" / "inner.png", tmp_path / "top.png"]


def test_broken_symlinks_are_ignored(tmp_path: Path) -> None:
    touch_image(tmp_path / "real.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "deleted.png")
    assert discover_images(tmp_path) == [tmp_path / "real.png"]


def test_missing_root_gives_no_images(tmp_path: Path) -> None:
    assert discover_images(tmp_path / "nowhere") == []


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root can list folders whatever their permissions")
def test_unreadable_folder_is_skipped(tmp_path: Path) -> None:
    touch_image(tmp_path / "open.png")
    locked = tmp_path / "locked"
    touch_image(locked / "secret.png")
    locked.chmod(0)
    try:
        found = discover_images(tmp_path)
    finally:
        locked.chmod(0o755)
    assert found == [tmp_path / "open.png"]


# --- expanding command-line paths -----------------------------------------------------------


def test_expand_keeps_input_order_and_passes_other_paths_through(tmp_path: Path) -> None:
    loose = touch_image(tmp_path / "z_loose.png")
    touch_image(tmp_path / "album" / "b.png")
    touch_image(tmp_path / "album" / "a.png")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image, but named on purpose")
    missing = tmp_path / "missing.jpg"

    expanded = expand_paths([loose, tmp_path / "album", missing, notes])

    assert expanded == [
        loose,
        tmp_path / "album" / "a.png",
        tmp_path / "album" / "b.png",
        missing,
        notes,
    ]


def test_expand_lists_a_file_once_at_its_first_occurrence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch_image(tmp_path / "album" / "a.png")
    touch_image(tmp_path / "album" / "b.png")
    monkeypatch.chdir(tmp_path)
    given = Path("album/b.png")

    expanded = expand_paths([given, Path("album"), Path("./album/b.png")])

    assert expanded == [given, tmp_path / "album" / "a.png"]


def test_expand_passes_hidden_choice_to_folders(tmp_path: Path) -> None:
    touch_image(tmp_path / ".secret.png")
    assert expand_paths([tmp_path]) == []
    assert expand_paths([tmp_path], include_hidden=True) == [tmp_path / ".secret.png"]


def test_large_jpeg_decodes_at_reduced_scale_but_never_below_min_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1000), (200, 30, 30)).save(path, quality=90)
    reduced = load_image(path, min_size=224)
    assert reduced.size == (400, 250)  # DCT scale 1/4: 1/8 would make the short side 125
    assert reduced.getpixel((200, 125)) == pytest.approx((200, 30, 30), abs=3)
    assert load_image(path).size == (1600, 1000)


def test_exif_rotation_still_applies_to_reduced_decodes(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    Image.new("RGB", (1600, 800), "blue").save(path, exif=exif)
    assert load_image(path, min_size=100).size == (100, 200)  # 1/8 scale, then turned


def test_min_size_leaves_other_formats_untouched(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (1600, 1000), "green").save(path)
    assert load_image(path, min_size=224).size == (1600, 1000)


# The photo models' input transform: shortest side to 224, centre crop, normalise.
CLIP_PIXELS = PixelTransform(
    224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), "bicubic"
)


def test_a_one_pixel_strip_keeps_only_the_middle_that_the_model_sees(tmp_path: Path) -> None:
    # A few hundred bytes of PNG, 100,000 pixels long: the model's transform scales the short
    # side up to 224 before taking the centre square, which here would be 5 billion pixels.
    strip = Image.new("RGB", (1, 100_000), RED)
    strip.paste(BLUE, (0, 49_990, 1, 50_010))
    path = save(strip, tmp_path / "strip.png")
    assert path.stat().st_size < 2_000

    image = load_image(path, min_size=224)

    assert image.size[0] == 1 and image.size[1] <= MODEL_ASPECT_LIMIT
    pixels = CLIP_PIXELS(image)
    assert pixels.shape == (3, 224, 224)
    blue = (np.asarray(BLUE) / 255.0 - np.asarray(CLIP_PIXELS.mean)) / CLIP_PIXELS.std
    np.testing.assert_allclose(pixels[:, 112, 0], blue, atol=1e-5)
    assert load_image(path).size == (1, 100_000)  # without min_size, the whole image


@pytest.mark.parametrize("size", [(3, 401), (400, 7), (2, 64), (5, 1000)])
def test_cutting_a_strip_short_leaves_the_model_input_as_it_was(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    # A colour gradient along the long side shows any shift of the centre crop.
    long = max(size)
    ramp = np.linspace(0, 255, long).astype(np.uint8)
    grid = np.stack([ramp, 255 - ramp, np.full_like(ramp, 90)], axis=-1)
    grid = grid[:, None, :] if size[1] == long else grid[None, :, :]
    drawn = Image.fromarray(np.broadcast_to(grid, (size[1], size[0], 3)).copy())
    path = save(drawn, tmp_path / "strip.png")

    whole = CLIP_PIXELS(Image.open(path).convert("RGB"))
    cut = CLIP_PIXELS(load_image(path, min_size=224))

    # Scaled sizes are rounded to whole pixels, so the two may differ by a fraction of one.
    assert np.abs(cut - whole).max() < 0.05


def test_a_photo_whose_exif_is_cut_short_decodes_without_pillows_warnings(tmp_path: Path) -> None:
    # Pillow skips what is missing with a UserWarning, which Python writes to stderr with a
    # line of Pillow's source: two lines of noise in the middle of a classify run.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    exif[0x0131] = "the camera's software, version 1.0"  # stored after the orientation
    path = save(Image.new("RGB", (40, 20), RED), tmp_path / "camera.jpg", exif=exif.tobytes()[:-8])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(path)

    assert image.size == (20, 40)  # still turned upright: its orientation came before the cut


def test_a_float_image_with_nan_and_infinite_samples_keeps_its_finite_picture(
    tmp_path: Path,
) -> None:
    # Such samples (a damaged float TIFF) once made every pixel NaN, cast to uint8 with a
    # numpy warning on stderr; they now take the ends of the range of the finite samples.
    samples = np.tile(np.linspace(-1.0, 3.0, 16, dtype=np.float32), (4, 1))
    samples[0, 5], samples[1, 5], samples[2, 5] = np.nan, np.inf, -np.inf
    samples.view(np.uint32)[0, 6] = 0x7F800001  # a signalling NaN: casting it sets a flag too
    path = save(Image.fromarray(samples, "F"), tmp_path / "float.tif")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grey = np.asarray(load_image(path))[..., 0]

    assert grey[3].tolist() == [round(i * 255 / 15) for i in range(16)]  # stretched as before
    assert grey[:3, 5].tolist() == [0, 255, 0]
    assert grey[0, 6] == 0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's VmSize")
def test_a_file_that_asks_for_more_memory_than_there_is_is_reported(tmp_path: Path) -> None:
    # The pixel data of a PNG is read by the length its header gives: set near 2 GB in a file
    # of a few hundred bytes, Pillow asks for all of it at once, which a small machine refuses.
    import resource  # Unix only

    png = bytearray(save(Image.new("RGB", (8, 8), RED), tmp_path / "fine.png").read_bytes())
    assert png[37:41] == b"IDAT"
    png[33:37] = (0x7FFFFFFF).to_bytes(4, "big")
    path = tmp_path / "greedy.png"
    path.write_bytes(png)

    with open("/proc/self/status") as status:
        held = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    limits = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (held + (512 << 20), limits[1]))
    try:
        error = decode_error(path)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limits)

    assert error.reason == "not enough memory to decode it"
