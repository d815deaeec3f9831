"""A procedural world of coloured shapes: the data the bundled `clipcli-shapes` model learns from.

One solid shape per image (6 shapes x 8 colours), placed inside the central square of an image of
any size from 48 to 1200 px and aspect 1:2 to 2:1, on a flat, gradient or noisy background whose
colour is clearly different from the shape's. Tests, the demo and the training script all draw from
here, so the world is defined once. Pillow and numpy only: no torch, so it is cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "black", "white")

RGB = tuple[int, int, int]
# The usual CSS values: "green" is CSS green (0, 128, 0), "purple" is CSS purple (128, 0, 128).
COLOUR_RGB: dict[str, RGB] = {
    "red": (255, 0, 0),
    "orange": (255, 165, 0),
    "yellow": (255, 255, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "purple": (128, 0, 128),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}
# Per-channel jitter; up to 40 keeps every pair of colours apart (orange/yellow is the closest).
COLOUR_JITTER = 30
# Euclidean RGB distance every background pixel keeps from the shape's colour (before noise).
MIN_CONTRAST = 120.0
MIN_SIDE, MAX_SIDE = 48, 1200
MIN_FRACTION, MAX_FRACTION = 0.2, 0.7
FORMATS: tuple[str, ...] = ("png", "jpeg", "webp")


@dataclass(frozen=True)
class ShapeSpec:
    """What an image of the world shows: one shape in one colour."""

    shape: str
    colour: str

    @property
    def label(self) -> str:
        """The label users would type, e.g. "red star"."""
        return f"{self.colour} {self.shape}"


def all_specs() -> list[ShapeSpec]:
    """The 48 colour-shape pairs, colour-major."""
    return [ShapeSpec(shape, colour) for colour in COLOURS for shape in SHAPES]


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) with both sides in 48-1200 and aspect in 1:2-2:1, log-uniform.

    Log-uniform favours small images (median short side about 200 px) yet includes large ones.
    """
    ratio = float(np.exp(rng.uniform(0.0, np.log(2.0))))
    short = float(np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE / ratio))))
    short_px = max(MIN_SIDE, round(short))
    long = max(short_px, min(MAX_SIDE, int(short_px * ratio)))
    return (long, short_px) if rng.random() < 0.5 else (short_px, long)


def shape_rgb(rng: np.random.Generator, colour: str, jitter: int = COLOUR_JITTER) -> RGB:
    """The colour's CSS value with each channel jittered by up to +-`jitter`."""
    values = np.array(COLOUR_RGB[colour]) + rng.integers(-jitter, jitter + 1, size=3)
    # Mirror at 0 and 255 rather than clip, so "black" is not pure black half the time but
    # spreads evenly over its dark greys (and likewise every channel at a bound).
    values = np.where(values < 0, -values, np.where(values > 255, 510 - values, values))
    return (int(values[0]), int(values[1]), int(values[2]))


def _random_rgb(rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """A background colour: any colour, a grey, or one of the world's colours (so the model must
    learn to name the shape's colour, not the largest area's)."""
    pick = rng.random()
    if pick < 0.45:
        return rng.uniform(0, 255, size=3)
    if pick < 0.65:
        return np.full(3, rng.uniform(0, 255))
    colour = COLOURS[rng.integers(len(COLOURS))]
    return np.array(shape_rgb(rng, colour), dtype=np.float64)


def background_sketch(rng: np.random.Generator, avoid: RGB) -> npt.NDArray[np.float64]:
    """A 32x32 RGB sketch of a flat, gradient or blotchy background, every pixel of it at least
    MIN_CONTRAST from `avoid`. Neighbouring sketch pixels are close in colour, so stretching the
    sketch over the image (bilinear) keeps that distance, give or take a little."""
    ys, xs = np.mgrid[0:32, 0:32] / 31.0
    for _ in range(1000):
        kind = rng.integers(3)
        if kind == 0:
            sketch = np.broadcast_to(_random_rgb(rng), (32, 32, 3))
        elif kind == 1:
            angle = rng.uniform(0, 2 * np.pi)
            t = xs * np.cos(angle) + ys * np.sin(angle)
            t = ((t - t.min()) / (t.max() - t.min()))[..., None]
            sketch = _random_rgb(rng) * (1 - t) + _random_rgb(rng) * t
        else:
            grid = np.clip(_random_rgb(rng) + rng.normal(0, 40, size=(3, 3, 3)), 0, 255)
            image = Image.fromarray(grid.astype(np.uint8)).resize((32, 32), Image.BICUBIC)
            sketch = np.asarray(image, dtype=np.float64)
        if np.linalg.norm(sketch - np.array(avoid), axis=-1).min() >= MIN_CONTRAST:
            return np.array(sketch)
    raise RuntimeError(f"no background far enough from {avoid}")  # unreachable in practice


def _unit_outline(shape: str, rng: np.random.Generator) -> list[npt.NDArray[np.float64]]:
    """The shape as polygons around (0, 0) spanning 1 unit before rotation; a circle is a
    64-gon and a ring is an outer polygon followed by the hole to cut out."""
    turn = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    disc = np.stack([np.cos(turn), np.sin(turn)], axis=1) * 0.5
    if shape == "circle":
        return [disc]
    if shape == "ring":
        return [disc, disc * (1 - 2 * rng.uniform(0.12, 0.2))]
    if shape == "square":
        return [np.array([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)])]
    if shape == "triangle":
        corners = np.radians([-90, 30, 150])
        points = np.stack([np.cos(corners), np.sin(corners)], axis=1) / np.sqrt(3)
        return [points]
    if shape == "star":
        tips = np.radians(np.arange(10) * 36 - 90)
        radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.2)
        return [np.stack([np.cos(tips) * radii, np.sin(tips) * radii], axis=1)]
    if shape == "cross":
        a, b = 1 / 6, 0.5
        return [np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a),
                          (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)])]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def shape_mask(rng: np.random.Generator, shape: str, width: int, height: int) -> Image.Image:
    """An antialiased "L" mask of one randomly sized, rotated and placed shape.

    The shape spans 20-70% of the shorter side (before rotation) and its rotated bounding box lies
    inside the central square, so the eval centre crop of any CLIP model keeps all of it.
    """
    polygons = _unit_outline(shape, rng)
    angle = 0.0 if shape in ("circle", "ring") else rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    side = min(width, height)
    scale = rng.uniform(MIN_FRACTION, MAX_FRACTION) * side
    polygons = [p @ rotation.T * scale for p in polygons]
    low, high = polygons[0].min(axis=0), polygons[0].max(axis=0)
    # A large square turned 45 degrees can outgrow a small image's square by a pixel or two.
    shrink = min(1.0, (side - 2) / float((high - low).max()))
    polygons, low, high = [p * shrink for p in polygons], low * shrink, high * shrink
    # One pixel of margin so antialiasing and blur stay inside the central square too.
    square_low = np.array([(width - side) / 2, (height - side) / 2]) + 1
    centre = rng.uniform(square_low - low, square_low + side - 2 - high)
    # Supersample small images, where jagged polygon edges would otherwise be most of the shape.
    factor = 4 if side < 300 else 2 if side < 600 else 1
    mask = Image.new("L", (width * factor, height * factor), 0)
    draw = ImageDraw.Draw(mask)
    for index, polygon in enumerate(polygons):
        points = [(float(x), float(y)) for x, y in (polygon + centre) * factor]
        draw.polygon(points, fill=255 if index == 0 else 0)
    return mask.resize((width, height), Image.BOX) if factor > 1 else mask


def draw_shape(
    rng: np.random.Generator,
    shape: str | None = None,
    colour: str | None = None,
    size: tuple[int, int] | None = None,
    *,
    jitter: int = COLOUR_JITTER,
) -> tuple[Image.Image, ShapeSpec]:
    """One RGB image of the world; random shape/colour/size when not given.

    `size` is (width, height). `jitter` widens or narrows the colour jitter (training uses a
    little more than the default so the model tolerates other people's idea of "green").
    """
    shape = shape if shape is not None else SHAPES[rng.integers(len(SHAPES))]
    colour = colour if colour is not None else COLOURS[rng.integers(len(COLOURS))]
    if shape not in SHAPES or colour not in COLOURS:
        raise ValueError(f"unknown shape or colour: {shape!r}, {colour!r}")
    width, height = size if size is not None else random_size(rng)
    fill = shape_rgb(rng, colour, jitter)
    sketch = Image.fromarray(background_sketch(rng, fill).astype(np.uint8))
    background = np.asarray(sketch.resize((width, height), Image.BILINEAR), dtype=np.float32)
    if rng.random() < 0.4:
        noise = rng.normal(0, rng.uniform(3, 20), size=background.shape).astype(np.float32)
        background = background + noise
    alpha = np.asarray(shape_mask(rng, shape, width, height), dtype=np.float32)[..., None] / 255
    pixels = background * (1 - alpha) + np.array(fill, dtype=np.float32) * alpha
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        # "Slightly": at most about 0.6 px once the image is scaled to 64 px.
        image = image.filter(
            ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * min(width, height) / 128)
        )
    return image, ShapeSpec(shape, colour)


def save_image(image: Image.Image, path_without_suffix: Path, rng: np.random.Generator) -> Path:
    """Save as PNG, JPEG (quality 60-95) or WEBP, chosen at random; returns the path written."""
    kind = FORMATS[rng.integers(len(FORMATS))]
    quality = int(rng.integers(60, 96))
    suffix = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}[kind]
    path = Path(path_without_suffix).with_name(Path(path_without_suffix).name + suffix)
    options = {"png": {}, "jpeg": {"quality": quality}, "webp": {"quality": quality}}[kind]
    image.save(path, format=kind.upper(), **options)
    return path


def write_sample_folder(folder: Path, count: int, seed: int) -> list[tuple[Path, ShapeSpec]]:
    """Draw `count` images (cycling through all 48 colour-shape pairs so each appears) into folder.

    Files are named like `0007-green-star.webp`; the same seed writes the same files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    specs = all_specs()
    written = []
    for index in range(count):
        wanted = specs[index % len(specs)]
        image, spec = draw_shape(rng, wanted.shape, wanted.colour)
        stem = folder / f"{index:04d}-{spec.colour}-{spec.shape}"
        written.append((save_image(image, stem, rng), spec))
    return written


def write_labelled_folder(
    root: Path, per_class: int, seed: int, *, classes: str = "shape"
) -> dict[str, list[Path]]:
    """A labelled dataset in the image-folder layout: one subfolder per class, `per_class`
    images in each. `classes` is "shape" (6 classes, any colour), "colour" (8, any shape) or
    "both" (48, e.g. `red_star`). Returns the files of each class folder."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for spec in _class_specs(classes):
        folder = Path(root) / "_".join(part for part in (spec.colour, spec.shape) if part)
        folder.mkdir(parents=True, exist_ok=True)
        files = written.setdefault(folder.name, [])
        for index in range(per_class):
            shape = spec.shape or SHAPES[rng.integers(len(SHAPES))]
            colour = spec.colour or COLOURS[rng.integers(len(COLOURS))]
            image, _ = draw_shape(rng, shape, colour)
            files.append(save_image(image, folder / f"{index:04d}-{colour}-{shape}", rng))
    return written


def _class_specs(classes: str) -> list[ShapeSpec]:
    """What each class fixes; "" leaves a part free ("shape": the colour is random)."""
    if classes == "shape":
        return [ShapeSpec(shape, "") for shape in SHAPES]
    if classes == "colour":
        return [ShapeSpec("", colour) for colour in COLOURS]
    if classes == "both":
        return all_specs()
    raise ValueError(f"unknown kind of class: {classes!r}")


# The first phrasing of each kind is the default zero-shot template, "a photo of a {}.", filled in.
_PHRASINGS: dict[str, tuple[str, ...]] = {
    "both": ("a photo of a {c} {s}.", "a {c} {s}", "a picture of a {c} {s}.", "{an} {c} {s}.",
             "a drawing of a {c} {s}.", "{c} {s}", "a photo of the {c} {s}.",
             "an image of a {c} {s}.", "a {s} that is {c}.", "a {c} {s} on a background."),
    "shape": ("a photo of a {s}.", "a {s}", "a picture of a {s}.", "a {s} shape.",
              "a drawing of a {s}.", "{s}", "a photo of the {s}.", "an image of a {s}."),
    "colour": ("a photo of a {c}.", "something {c}.", "a {c} shape.", "{c}",
               "a picture of something {c}.", "a {c} thing.", "the colour {c}.",
               "a photo of something {c}."),
}  # fmt: skip
CAPTION_KINDS: tuple[str, ...] = tuple(_PHRASINGS)


def caption(spec: ShapeSpec, rng: np.random.Generator, kind: str | None = None) -> str:
    """A training caption in one of several phrasings.

    `kind` is "both" (colour and shape), "shape" or "colour"; random (half "both") when None.
    The template form comes up a third of the time, since that is what zero-shot labels use.
    """
    if kind is None:
        kind = "both" if rng.random() < 0.5 else ("shape", "colour")[rng.integers(2)]
    phrasings = _PHRASINGS[kind]
    index = 0 if rng.random() < 1 / 3 else int(rng.integers(1, len(phrasings)))
    article = "an" if spec.colour[0] in "aeiou" else "a"
    return phrasings[index].format(c=spec.colour, s=spec.shape, an=article)
