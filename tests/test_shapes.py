"""The shapes world: what every image drawn by clipcli.shapes is guaranteed to look like."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipcli.shapes import (
    COLOUR_RGB,
    COLOURS,
    MIN_CONTRAST,
    SHAPES,
    ShapeSpec,
    all_specs,
    background_sketch,
    caption,
    draw_shape,
    random_size,
    save_image,
    shape_mask,
    shape_rgb,
    write_sample_folder,
)


def test_the_world_has_six_shapes_in_eight_colours() -> None:
    assert SHAPES == ("circle", "square", "triangle", "star", "cross", "ring")
    assert COLOURS == ("red", "orange", "yellow", "green", "blue", "purple", "black", "white")
    assert len(set(all_specs())) == 48


def test_a_spec_is_labelled_colour_then_shape() -> None:
    assert ShapeSpec("star", "red").label == "red star"


def test_random_sizes_are_48_to_1200_px_with_aspect_between_1_2_and_2_1() -> None:
    rng = np.random.default_rng(0)
    sizes = [random_size(rng) for _ in range(3000)]
    for width, height in sizes:
        assert 48 <= width <= 1200
        assert 48 <= height <= 1200
        assert 0.5 <= width / height <= 2.0
    shorter = [min(size) for size in sizes]
    # Mostly small, to keep drawing cheap, but the large end is reached too.
    assert np.median(shorter) < 300
    assert min(shorter) < 60
    assert max(max(size) for size in sizes) > 1000
    assert any(w > h for w, h in sizes)
    assert any(h > w for w, h in sizes)


@pytest.mark.parametrize("size", [(48, 96), (123, 77), (640, 480)])
def test_draw_shape_gives_an_rgb_image_of_the_requested_size_and_spec(
    size: tuple[int, int],
) -> None:
    image, spec = draw_shape(np.random.default_rng(1), "star", "orange", size)
    assert image.mode == "RGB"
    assert image.size == size
    assert spec == ShapeSpec("star", "orange")


def test_draw_shape_picks_shape_colour_and_size_when_not_given() -> None:
    rng = np.random.default_rng(2)
    drawn = [draw_shape(rng, size=(64, 64))[1] for _ in range(300)]
    assert {spec.shape for spec in drawn} == set(SHAPES)
    assert {spec.colour for spec in drawn} == set(COLOURS)
    image, spec = draw_shape(rng)
    assert min(image.size) >= 48 and max(image.size) <= 1200
    assert spec.shape in SHAPES


def test_draw_shape_rejects_names_outside_the_world() -> None:
    with pytest.raises(ValueError, match="hexagon"):
        draw_shape(np.random.default_rng(0), "hexagon", "red", (64, 64))
    with pytest.raises(ValueError, match="pink"):
        draw_shape(np.random.default_rng(0), "star", "pink", (64, 64))


def _mask_box(mask: Image.Image) -> tuple[int, int, int, int]:
    box = mask.point(lambda v: 255 if v > 127 else 0).getbbox()
    assert box is not None, "the shape was not drawn"
    return box


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_lies_inside_the_central_square(shape: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        width, height = random_size(rng) if rng.random() < 0.5 else (48, 96)
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = shape_mask(rng, shape, width, height).getbbox()  # any trace of the shape at all
        assert box is not None
        x0, y0, x1, y1 = box
        assert left <= x0 and x1 <= left + side + 1
        assert top <= y0 and y1 <= top + side + 1
        # Rotation makes the box of a 20% shape at least 0.85 x 20% of the side.
        extent = max(x1 - x0, y1 - y0) / side
        assert 0.2 * 0.85 - 2 / side <= extent <= 1.0 + 2 / side


def test_circles_and_rings_span_20_to_70_percent_of_the_shorter_side() -> None:
    rng = np.random.default_rng(4)
    extents = []
    for shape in ("circle", "ring") * 100:
        width, height = random_size(rng)
        x0, y0, x1, y1 = _mask_box(shape_mask(rng, shape, width, height))
        side = min(width, height)
        extents.append(max(x1 - x0, y1 - y0) / side)
        assert 0.2 - 2 / side <= extents[-1] <= 0.7 + 2 / side
    assert min(extents) < 0.25 and max(extents) > 0.65


def test_a_ring_has_a_hole_and_a_circle_has_none() -> None:
    rng = np.random.default_rng(5)
    for shape, centre_filled in (("circle", True), ("ring", False)):
        mask = np.asarray(shape_mask(rng, shape, 200, 200))
        rows, cols = np.nonzero(mask > 127)
        centre = mask[round(rows.mean()), round(cols.mean())]
        assert (centre > 127) == centre_filled


@pytest.mark.parametrize("colour", COLOURS)
def test_shape_colours_are_jittered_around_their_css_value(colour: str) -> None:
    rng = np.random.default_rng(6)
    samples = np.array([shape_rgb(rng, colour) for _ in range(200)])
    offsets = np.abs(samples - np.array(COLOUR_RGB[colour]))
    assert offsets.max() <= 30
    assert len({tuple(s) for s in samples}) > 50


@pytest.mark.parametrize("colour", COLOURS)
def test_backgrounds_stay_clearly_different_from_the_shape_colour(colour: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(100):
        fill = shape_rgb(rng, colour)
        sketch = background_sketch(rng, fill)
        assert sketch.shape == (32, 32, 3)
        assert np.linalg.norm(sketch - np.array(fill), axis=-1).min() >= MIN_CONTRAST


def test_backgrounds_come_flat_and_varied() -> None:
    rng = np.random.default_rng(8)
    spreads = [background_sketch(rng, (255, 0, 0)).std(axis=(0, 1)).max() for _ in range(300)]
    assert sum(spread == 0 for spread in spreads) > 30
    assert sum(spread > 20 for spread in spreads) > 50


def test_images_are_saved_as_png_jpeg_or_webp_and_read_back_nearly_unchanged(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(9)
    image, _ = draw_shape(rng, "cross", "blue", (120, 90))
    original = np.asarray(image, dtype=np.float32)
    formats = set()
    for index in range(30):
        path = save_image(image, tmp_path / f"picture-{index}", rng)
        assert path.parent == tmp_path and path.stem == f"picture-{index}"
        with Image.open(path) as saved:
            formats.add((path.suffix, saved.format))
            pixels = np.asarray(saved.convert("RGB"), dtype=np.float32)
        # JPEG and WEBP at quality 60 or better stay close to the original on average.
        assert np.abs(pixels - original).mean() < 8
    assert formats == {(".png", "PNG"), (".jpg", "JPEG"), (".webp", "WEBP")}


def test_a_sample_folder_holds_every_colour_shape_pair(tmp_path: Path) -> None:
    written = write_sample_folder(tmp_path / "samples", 48, seed=10)
    assert [spec for _, spec in written] == all_specs()
    for path, spec in written:
        assert path.parent == tmp_path / "samples"
        assert path.suffix in (".png", ".jpg", ".webp")
        assert f"{spec.colour}-{spec.shape}" in path.name
        with Image.open(path) as image:
            assert min(image.size) >= 48 and max(image.size) <= 1200


def test_the_same_seed_writes_the_same_folder_and_another_seed_does_not(tmp_path: Path) -> None:
    first = write_sample_folder(tmp_path / "a", 12, seed=11)
    again = write_sample_folder(tmp_path / "b", 12, seed=11)
    other = write_sample_folder(tmp_path / "c", 12, seed=12)
    assert [p.name for p, _ in first] == [p.name for p, _ in again]
    assert [p.read_bytes() for p, _ in first] == [p.read_bytes() for p, _ in again]
    assert [p.read_bytes() for p, _ in first] != [p.read_bytes() for p, _ in other]


def test_captions_name_what_their_kind_promises() -> None:
    rng = np.random.default_rng(13)
    spec = ShapeSpec("star", "red")
    for _ in range(100):
        both = caption(spec, rng, "both")
        assert "red" in both and "star" in both
        shape_only = caption(spec, rng, "shape")
        assert "star" in shape_only and "red" not in shape_only
        colour_only = caption(spec, rng, "colour")
        assert "red" in colour_only and "star" not in colour_only


def test_captions_include_the_zero_shot_template_forms_among_other_phrasings() -> None:
    rng = np.random.default_rng(14)
    spec = ShapeSpec("ring", "orange")
    seen = {caption(spec, rng) for _ in range(600)}
    assert {"a photo of a orange ring.", "a photo of a ring.", "a photo of a orange."} <= seen
    assert {"an orange ring.", "a ring", "something orange."} <= seen
    assert len(seen) > 20
