"""The image loader on damaged files: `make fuzz`, not part of `make test`.

Every image that classify, index and search --image read goes through `load_image(path,
min_size=...)` and then the model's pixel transform. Starting from small valid files of each
format, Hypothesis flips, overwrites, inserts, deletes, duplicates and truncates bytes and
splices one file's header onto another's body; for each result the loader must either give
model pixels of the right shape or say the file is unreadable with an ImageDecodeError (which
classify prints as one `error:` line and index as one skipped file). Any other exception, a
warning (which Python would write to stderr), an example that runs too long, or memory beyond
a fixed budget fails the run.

Runs are random, so each run tries new files; a failure prints the seed file and mutations
that reproduce it. FUZZ_EXAMPLES sets the number of mutated files per format.
"""

from __future__ import annotations

import faulthandler
import io
import os
import resource
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipcli.encoders.pixels import PixelTransform
from clipcli.media.decode import ImageDecodeError, load_image

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
# One example is a few milliseconds; far longer means a decoder loops. The soft limit raises
# in Python code, the hard one ends the process when a decoder loops in C.
SOFT_LIMIT_S = 5.0
HARD_LIMIT_S = 60.0
# Address space the test may take beyond what the process holds when it starts: past it an
# allocation raises MemoryError, where it would otherwise take the machine's memory.
MEMORY_BUDGET = 1 << 30
# Pillow refuses images over twice this many pixels as decompression bombs and the loader
# accepts any below. Lowered from Pillow's 89 million for the run, so that the largest image
# accepted fits the memory budget many times over: the same check, at a smaller scale.
PIXEL_LIMIT = 2_000_000

# The photo models' input: shortest side to 224, centre crop, normalised, as open_clip does it.
MODEL_SIDE = 224
PIXELS = PixelTransform(
    MODEL_SIDE,
    (0.48145466, 0.4578275, 0.40821073),
    (0.26862954, 0.26130258, 0.27577711),
    "bicubic",
)

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the time limit below applies; Hypothesis' deadline does not stop a hang
    database=None,  # nothing written into the checkout; a failure prints what reproduces it
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        # The limits fixture is meant to hold for all of a test's examples.
        HealthCheck.function_scoped_fixture,
    ],
)


# -- seed files ------------------------------------------------------------------------------


def _drawing(mode: str = "RGB", size: tuple[int, int] = (24, 16)) -> Image.Image:
    """A small picture with edges and colours, so that every codec has real data to store."""
    rgb = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    rgb[..., 0] = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :]
    rgb[..., 1] = np.linspace(255, 0, size[1], dtype=np.uint8)[:, None]
    rgb[: size[1] // 2, : size[0] // 3, 2] = 255
    return Image.fromarray(rgb).convert(mode)


def _encoded(image: Image.Image, file_format: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=file_format, **params)
    return out.getvalue()


def _frames(count: int = 3) -> list[Image.Image]:
    return [_drawing().rotate(90 * i) for i in range(count)]


def _png_with_alpha() -> bytes:
    image = _drawing("RGBA")
    image.putalpha(Image.linear_gradient("L").resize(image.size))
    return _encoded(image, "PNG")


def _sixteen_bit_png() -> bytes:
    samples = np.arange(24 * 16, dtype=np.uint16).reshape(16, 24) * 170  # up to 65,110
    return _encoded(Image.fromarray(samples), "PNG")


def _jpeg_turned() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned a quarter: the loader applies it
    return _encoded(_drawing(), "JPEG", quality=80, exif=exif.tobytes())


def _gif_animated() -> bytes:
    first, *rest = [frame.convert("P") for frame in _frames()]
    return _encoded(first, "GIF", save_all=True, append_images=rest, transparency=0, loop=0)


def _webp_animated() -> bytes:
    first, *rest = _frames()
    return _encoded(first, "WEBP", save_all=True, append_images=rest, duration=50)


SEED_MAKERS: dict[str, dict[str, Callable[[], bytes]]] = {
    "png": {
        "rgb": lambda: _encoded(_drawing(), "PNG"),
        "alpha": _png_with_alpha,
        "palette": lambda: _encoded(_drawing("P"), "PNG", transparency=3),
        "16-bit": _sixteen_bit_png,
        # A few hundred bytes for a picture 6,000 long: the model's transform would scale its
        # short side up to 224 before cropping, unless the loader cuts it down first.
        "strip": lambda: _encoded(_drawing(size=(1, 6000)), "PNG"),
    },
    "jpeg": {
        "baseline": lambda: _encoded(_drawing(), "JPEG", quality=80),
        "progressive": lambda: _encoded(_drawing(), "JPEG", progressive=True),
        "exif-turned": _jpeg_turned,
        "cmyk": lambda: _encoded(_drawing("CMYK"), "JPEG"),
    },
    "webp": {
        "lossy": lambda: _encoded(_drawing(), "WEBP", quality=70),
        "lossless": lambda: _encoded(_drawing("RGBA"), "WEBP", lossless=True),
        "animated": _webp_animated,
    },
    "gif": {
        "still": lambda: _encoded(_drawing("P"), "GIF"),
        "strip": lambda: _encoded(_drawing("P", size=(6000, 2)), "GIF"),
        "animated": _gif_animated,
    },
    "bmp": {
        "rgb": lambda: _encoded(_drawing(), "BMP"),
        "1-bit": lambda: _encoded(_drawing("1"), "BMP"),
        "palette": lambda: _encoded(_drawing("P"), "BMP"),
    },
    "tiff": {
        "raw": lambda: _encoded(_drawing(), "TIFF"),
        "lzw": lambda: _encoded(_drawing(), "TIFF", compression="tiff_lzw"),
        "packbits-grey": lambda: _encoded(_drawing("L"), "TIFF", compression="packbits"),
        "16-bit": lambda: _encoded(Image.open(io.BytesIO(_sixteen_bit_png())), "TIFF"),
        "float": lambda: _encoded(_drawing("F"), "TIFF"),
    },
}
SEEDS: dict[str, bytes] = {
    f"{kind}/{name}": make()
    for kind, makers in SEED_MAKERS.items()
    for name, make in makers.items()
}


# -- mutations -------------------------------------------------------------------------------
# Offsets are drawn as plain numbers and taken modulo the file's length, so that any list of
# mutations applies to any file; half of them fall in the first 64 bytes, where the headers
# that give sizes, counts and offsets are.

# Values that header fields break on: zero, one, the largest and smallest of each width.
INTERESTING = [
    b"\x00",
    b"\x01",
    b"\x7f",
    b"\x80",
    b"\xff",
    b"\x00\x00",
    b"\xff\xff",
    b"\x7f\xff",
    b"\x80\x00",
    b"\x00\x01",
    b"\x01\x00",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"\x00\x00\x00\x01",
    b"\x01\x00\x00\x00",
    b"\x00\x00\xff\xff",
    b"\xff\xff\x00\x00",
]


def _at(offset: int, data: bytes | bytearray) -> int:
    return offset % (len(data) + 1)


@dataclass(frozen=True)
class Flip:
    offset: int
    mask: int

    def apply(self, data: bytearray) -> bytearray:
        if data:
            data[self.offset % len(data)] ^= self.mask
        return data


@dataclass(frozen=True)
class Overwrite:
    offset: int
    value: bytes

    def apply(self, data: bytearray) -> bytearray:
        at = _at(self.offset, data)
        data[at : at + len(self.value)] = self.value
        return data


@dataclass(frozen=True)
class Insert:
    offset: int
    value: bytes

    def apply(self, data: bytearray) -> bytearray:
        at = _at(self.offset, data)
        data[at:at] = self.value
        return data


@dataclass(frozen=True)
class Delete:
    offset: int
    length: int

    def apply(self, data: bytearray) -> bytearray:
        at = _at(self.offset, data)
        del data[at : at + self.length]
        return data


@dataclass(frozen=True)
class Duplicate:
    """A run of bytes repeated in place: a chunk, frame or directory entry twice over."""

    offset: int
    length: int
    times: int

    def apply(self, data: bytearray) -> bytearray:
        at = _at(self.offset, data)
        run = data[at : at + self.length]
        data[at:at] = run * self.times
        return data


@dataclass(frozen=True)
class Truncate:
    keep: int

    def apply(self, data: bytearray) -> bytearray:
        return data[: _at(self.keep, data)]


@dataclass(frozen=True)
class Splice:
    """The start of this file, then the rest of another from some offset on."""

    offset: int
    donor: str
    donor_offset: int

    def apply(self, data: bytearray) -> bytearray:
        donor = SEEDS[self.donor]
        return data[: _at(self.offset, data)] + donor[_at(self.donor_offset, donor) :]


Mutation = Flip | Overwrite | Insert | Delete | Duplicate | Truncate | Splice

offsets = st.one_of(st.integers(0, 63), st.integers(0, 1 << 20))
mutations: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(Flip, offsets, st.integers(1, 255)),
    st.builds(
        Overwrite,
        offsets,
        st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=8)),
    ),
    st.builds(
        Insert, offsets, st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=32))
    ),
    st.builds(Delete, offsets, st.integers(1, 64)),
    st.builds(Duplicate, offsets, st.integers(1, 64), st.integers(1, 16)),
    st.builds(Truncate, offsets),
    st.builds(Splice, offsets, st.sampled_from(sorted(SEEDS)), offsets),
)


def mutated(seed: bytes, changes: list[Mutation]) -> bytes:
    data = bytearray(seed)
    for change in changes:
        data = change.apply(data)
    return bytes(data)


# -- limits ----------------------------------------------------------------------------------


class TookTooLong(Exception):
    """An example ran past SOFT_LIMIT_S."""


def _too_long(signum: int, frame: FrameType | None) -> None:
    raise TookTooLong(f"one file took over {SOFT_LIMIT_S:.0f} s")


def _address_space() -> int | None:
    """Bytes of address space this process holds now, where Linux says."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pillow's pixel limit lowered, and the address space capped, for the whole test: an
    allocation past the budget raises MemoryError, which fails the example that made it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PIXEL_LIMIT)
    held = _address_space()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if held is not None:
        cap = held + MEMORY_BUDGET
        resource.setrlimit(
            resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard)
        )
    previous = signal.signal(signal.SIGALRM, _too_long)
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextmanager
def time_limit() -> Iterator[None]:
    faulthandler.dump_traceback_later(HARD_LIMIT_S, exit=True)
    signal.setitimer(signal.ITIMER_REAL, SOFT_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()


# -- the property ----------------------------------------------------------------------------


def model_pixels_or_refusal(data: bytes, suffix: str) -> str:
    """Load `data` as a user's file, as classify and index do, and check what comes back;
    returns what happened, for the statistics."""
    refusal: ImageDecodeError | None = None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"photo.{suffix}"
        path.write_bytes(data)
        # A warning is written to stderr, between the results, as lines of library source.
        with time_limit(), warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            try:
                image = load_image(path, min_size=MODEL_SIDE)
                pixels = PIXELS(image)
            except ImageDecodeError as refused:
                refusal = refused
        assert [str(w.message) for w in warned] == []
    if refusal is not None:
        assert refusal.path == path
        assert refusal.reason and "\n" not in refusal.reason
        return "refused: " + refusal.reason.split(" (")[0].split(":")[0]
    assert image.mode == "RGB"
    assert min(image.size) >= 1
    assert pixels.shape == (3, MODEL_SIDE, MODEL_SIDE)
    assert pixels.dtype == np.float32
    assert np.isfinite(pixels).all()
    return "decoded"


@pytest.mark.parametrize("kind", sorted(SEED_MAKERS))
@FUZZ
@given(data=st.data())
def test_a_damaged_file_gives_model_pixels_or_is_reported_unreadable(
    kind: str, data: st.DataObject, limits: None
) -> None:
    """Whatever bytes a file of this format holds, loading it for a model gives pixels of the
    model's input shape or an ImageDecodeError naming the file, within the time and memory
    limits: never another exception, which would end a whole classify or index run."""
    name = data.draw(st.sampled_from(sorted(SEED_MAKERS[kind])), label="seed")
    changes = data.draw(st.lists(mutations, min_size=1, max_size=4), label="mutations")
    outcome = model_pixels_or_refusal(mutated(SEEDS[f"{kind}/{name}"], changes), kind)
    event(outcome)


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_every_seed_file_loads_before_it_is_damaged(seed: str, limits: None) -> None:
    """Mutations start from files the loader reads, or they would test only refusals."""
    assert model_pixels_or_refusal(SEEDS[seed], seed.split("/")[0]) == "decoded"
