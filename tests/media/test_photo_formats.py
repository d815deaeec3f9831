"""Specification of decoding phone and camera photos: HEIF (HEIC) and AVIF, and camera RAW files
through their embedded previews. Every file is written here, into tmp_path."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from clipcli.media import decode, heif
from clipcli.media.decode import ImageDecodeError, load_image

pillow_heif = pytest.importorskip("pillow_heif")

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
EXIF_ORIENTATION = 0x0112
PILLOW_READS_AVIF = ".avif" in Image.registered_extensions()
needs_avif = pytest.mark.skipif(not PILLOW_READS_AVIF, reason="Pillow built without AVIF")


def marked(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """White, with a red square in the top-left corner: shows which way up a picture is."""
    image = Image.new("RGB", size, WHITE)
    image.paste(RED, (0, 0, 10, 10))
    return image


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[EXIF_ORIENTATION] = orientation
    return tags.tobytes()


def save_heic(image: Image.Image, path: Path, **params: object) -> Path:
    pillow_heif.from_pillow(image).save(path, quality=95, **params)
    return path


def save_avif(image: Image.Image, path: Path, **params: object) -> Path:
    image.save(path, format="AVIF", quality=95, **params)
    return path


def jpeg(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **params)
    return buffer.getvalue()


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 24) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), actual


def assert_turned_upright_once(image: Image.Image) -> None:
    """`marked()` stored with orientation 6 (display turned 90 degrees clockwise): the red
    square is then top-right of a 20 x 40 picture. Turned twice, it would be bottom-left of
    a 40 x 20 one; not at all, top-left of a 40 x 20 one."""
    assert image.size == (20, 40)
    assert_close(image.getpixel((15, 4)), RED, tolerance=60)
    assert_close(image.getpixel((4, 4)), WHITE, tolerance=60)


def decode_error(path: Path, min_size: int | None = None) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as caught:
        load_image(path, min_size)
    return caught.value


# --- HEIF and AVIF --------------------------------------------------------------------------


def test_a_heic_photo_decodes_to_its_size_and_colours(tmp_path: Path) -> None:
    source = Image.new("RGB", (48, 32), BLUE)
    source.paste(RED, (0, 0, 24, 32))
    image = load_image(save_heic(source, tmp_path / "IMG_0001.HEIC"))
    assert (image.mode, image.size) == ("RGB", (48, 32))
    assert_close(image.getpixel((8, 16)), RED)
    assert_close(image.getpixel((40, 16)), BLUE)


@needs_avif
def test_an_avif_photo_decodes_to_its_size_and_colours(tmp_path: Path) -> None:
    image = load_image(save_avif(Image.new("RGB", (48, 32), BLUE), tmp_path / "photo.avif"))
    assert (image.mode, image.size) == ("RGB", (48, 32))
    assert_close(image.getpixel((24, 16)), BLUE)


def test_a_heic_with_transparency_is_put_on_white(tmp_path: Path) -> None:
    source = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    source.paste((*BLUE, 255), (0, 0, 8, 16))
    image = load_image(save_heic(source, tmp_path / "sticker.heic"))
    assert_close(image.getpixel((12, 8)), WHITE)
    assert_close(image.getpixel((4, 8)), BLUE)


def test_a_rotated_heic_comes_out_upright_and_turned_only_once(tmp_path: Path) -> None:
    # pillow-heif turns the pixels by the file's rotation as it decodes, and sets the EXIF
    # orientation it hands on to 1: were it left at 6, the picture would be turned again.
    path = save_heic(marked(), tmp_path / "portrait.heic", exif=exif(6))
    assert_turned_upright_once(load_image(path))
    assert_turned_upright_once(load_image(path, min_size=8))


@needs_avif
def test_a_rotated_avif_comes_out_upright_and_turned_only_once(tmp_path: Path) -> None:
    path = save_avif(marked(), tmp_path / "portrait.avif", exif=exif(6))
    assert_turned_upright_once(load_image(path))


def test_a_heic_is_known_by_its_content_whatever_its_name(tmp_path: Path) -> None:
    # Photos exported from phones often keep a .jpg name over HEIF content.
    path = save_heic(marked(), tmp_path / "exported.jpg")
    assert load_image(path).size == (40, 20)


def test_decoding_registers_pillow_heif_only_once_a_heif_file_is_met(tmp_path: Path) -> None:
    # In a fresh interpreter: importing pillow-heif costs every start-up some 20 ms.
    heic = save_heic(marked(), tmp_path / "a.heic")
    png = tmp_path / "b.png"
    marked().save(png)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from clipcli.media.decode import load_image\n"
        "seen = ['pillow_heif' in sys.modules]\n"
        f"load_image(Path({str(png)!r}))\n"
        "seen.append('pillow_heif' in sys.modules)\n"
        f"print(load_image(Path({str(heic)!r})).size, *seen, 'pillow_heif' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["(40,", "20)", "False", "False", "True"]


def test_without_pillow_heif_a_heic_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_heic(marked(), tmp_path / "IMG_0002.heic")
    monkeypatch.setattr(heif, "_registered", False)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import now fails
    assert decode_error(path).reason == "HEIF image, but pillow-heif (which decodes it) is missing"


def test_without_an_avif_decoder_an_avif_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow's wheels read AVIF from 11.2; a Pillow without it lists no .avif file, but one
    # named on the command line (or under another name) is still opened.
    monkeypatch.setattr(decode, "AVIF_EXTENSIONS", frozenset())
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64))
    assert decode_error(path).reason == "AVIF image, but this Pillow cannot decode AVIF (11.2 can)"


def noise(size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "save", [save_heic, pytest.param(save_avif, marks=needs_avif)], ids=["heic", "avif"]
)
@pytest.mark.parametrize("kept", [0.9, 0.6, 0.3, 0.1])
def test_a_truncated_heic_or_avif_is_reported_as_corrupt(tmp_path: Path, save, kept: float) -> None:
    whole = save(noise(), tmp_path / "whole.img").read_bytes()
    path = tmp_path / "cut.heic"
    path.write_bytes(whole[: int(len(whole) * kept)])

    error = decode_error(path)

    assert error.reason.startswith("truncated or corrupt"), error.reason
    assert "\n" not in error.reason


@pytest.mark.parametrize(
    "save", [save_heic, pytest.param(save_avif, marks=needs_avif)], ids=["heic", "avif"]
)
def test_damaged_heic_and_avif_files_decode_or_give_a_reason(tmp_path: Path, save) -> None:
    # libheif and libavif say RuntimeError for some damage, which must not escape as a bug.
    whole = bytearray(save(noise(), tmp_path / "whole.img").read_bytes())
    rng = np.random.default_rng(1)
    outcomes = set()
    for attempt in range(60):
        damaged = bytearray(whole)
        for _ in range(1 + attempt % 4):
            damaged[int(rng.integers(12, len(damaged)))] = int(rng.integers(0, 256))
        path = tmp_path / f"damaged-{attempt}.img"
        path.write_bytes(bytes(damaged))
        try:
            outcomes.add(load_image(path).mode)
        except ImageDecodeError as error:
            outcomes.add("error")
            assert error.reason and "\n" not in error.reason
    assert outcomes <= {"RGB", "error"}


# --- camera RAW files -----------------------------------------------------------------------


def test_a_raw_file_without_rawpy_gives_the_exact_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rawpy", None)  # as if not installed
    for name in ["IMG_0001.CR2", "DSC_0002.nef", "P1000003.Rw2"]:
        path = tmp_path / name
        path.write_bytes(b"II*\x00" + bytes(64))
        error = decode_error(path)
        assert error.reason == "RAW without an embedded preview reader: pip install clipcli[raw]"
        assert str(error) == f"{path}: {error.reason}"


def test_an_empty_raw_file_is_refused_before_rawpy_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "empty.cr3"
    path.touch()
    assert decode_error(path).reason == "empty file (0 bytes)"


class LibRawError(Exception):
    pass


class LibRawNoThumbnailError(LibRawError):
    pass


class LibRawUnsupportedThumbnailError(LibRawError):
    pass


class LibRawFileUnsupportedError(LibRawError):
    pass


class LibRawIOError(LibRawError):
    pass


def fake_rawpy(
    monkeypatch: pytest.MonkeyPatch, thumb: bytes | np.ndarray | Exception, flip: int = 0
) -> list[str]:
    """Installs a stand-in for rawpy whose every file holds `thumb` (JPEG bytes, RGB samples,
    or the LibRaw error to raise) with LibRaw's orientation `flip`; returns the paths opened."""
    opened: list[str] = []

    class Raw:
        sizes = SimpleNamespace(flip=flip)

        def __enter__(self) -> Raw:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def extract_thumb(self) -> SimpleNamespace:
            if isinstance(thumb, Exception):
                raise thumb
            return SimpleNamespace(format=None, data=thumb)

    def imread(path: str) -> Raw:
        assert isinstance(path, str)  # rawpy reads a str as a path, anything else as a file
        opened.append(path)
        return Raw()

    module = ModuleType("rawpy")
    module.imread = imread  # type: ignore[attr-defined]
    for error in (
        LibRawError,
        LibRawNoThumbnailError,
        LibRawUnsupportedThumbnailError,
        LibRawFileUnsupportedError,
        LibRawIOError,
    ):
        setattr(module, error.__name__, error)
    monkeypatch.setitem(sys.modules, "rawpy", module)
    return opened


def raw_file(tmp_path: Path, name: str = "IMG_0001.CR2") -> Path:
    path = tmp_path / name
    path.write_bytes(b"II*\x00" + bytes(64))  # what is inside is rawpy's business
    return path


def test_a_raw_file_gives_its_embedded_jpeg_preview(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = Image.new("RGB", (48, 32), BLUE)
    opened = fake_rawpy(monkeypatch, jpeg(source))
    path = raw_file(tmp_path)

    image = load_image(path)

    assert opened == [str(path)]
    assert (image.mode, image.size) == ("RGB", (48, 32))
    assert_close(image.getpixel((24, 16)), BLUE, tolerance=8)


def test_a_raw_preview_is_turned_by_the_camera_orientation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_rawpy(monkeypatch, jpeg(marked()), flip=6)  # LibRaw's 6: turn 90 degrees clockwise
    assert_turned_upright_once(load_image(raw_file(tmp_path)))


def test_a_raw_preview_with_its_own_exif_orientation_is_turned_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The preview's EXIF and the RAW file both say 6: that is one turn, not two.
    fake_rawpy(monkeypatch, jpeg(marked(), exif=exif(6)), flip=6)
    assert_turned_upright_once(load_image(raw_file(tmp_path)))


def test_a_raw_preview_given_as_a_bitmap_is_used_and_turned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_rawpy(monkeypatch, np.asarray(marked()), flip=3)  # 180 degrees
    image = load_image(raw_file(tmp_path, "DSC_0001.NEF"))
    assert image.size == (40, 20)
    assert image.getpixel((35, 15)) == RED
    assert image.getpixel((4, 4)) == WHITE


def test_a_large_raw_preview_decodes_at_reduced_scale_like_any_jpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_rawpy(monkeypatch, jpeg(Image.new("RGB", (1600, 1000), BLUE)))
    assert load_image(raw_file(tmp_path), min_size=224).size == (400, 250)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (LibRawNoThumbnailError(b"No thumbnail in file"), "RAW file without an embedded preview"),
        (
            LibRawUnsupportedThumbnailError(b"Unsupported thumbnail format"),
            "RAW file whose embedded preview is in an unreadable format",
        ),
        (
            LibRawFileUnsupportedError(b"Unsupported file format or not RAW file"),
            "not a RAW file LibRaw reads (another format, or damaged)",
        ),
        (LibRawIOError(b"Input/output error"), "truncated or unreadable RAW file"),
        (
            LibRawError(b"Out of order call of libraw function"),
            "cannot read RAW file (Out of order call of libraw function)",
        ),
    ],
)
def test_a_raw_file_whose_preview_cannot_be_had_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, reason: str
) -> None:
    fake_rawpy(monkeypatch, error)
    assert decode_error(raw_file(tmp_path)).reason == reason


def test_a_raw_file_with_a_damaged_preview_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = jpeg(noise())
    fake_rawpy(monkeypatch, whole[: len(whole) // 2])
    reason = decode_error(raw_file(tmp_path)).reason
    assert reason.startswith("embedded preview: truncated or corrupt image data"), reason


# A real RAW file, for rawpy itself: a DNG is a TIFF that LibRaw reads with a few tags.

_SHORT, _LONG, _ASCII, _BYTE, _SRATIONAL = 3, 4, 2, 1, 10
_FORMATS = {_SHORT: "H", _LONG: "I", _BYTE: "B", _SRATIONAL: "i"}


def dng(preview: bytes | None = None, orientation: int = 1) -> bytes:
    """A minimal DNG: a 32 x 24 sensor image (a Bayer mosaic of noise) and, when given, a JPEG
    preview in the first IFD, as cameras' own DNGs hold them, with the camera's orientation."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")

    def put(data: bytes) -> int:
        offset = len(out)
        out.extend(data + b"\x00" * (len(data) % 2))  # TIFF keeps offsets even
        return offset

    def ifd(entries: list[tuple[int, int, object]]) -> int:
        packed = []
        for tag, kind, values in sorted(entries, key=lambda entry: entry[0]):
            if kind == _ASCII:
                data, count = str(values).encode() + b"\x00", len(str(values)) + 1
            else:
                flat = [v for value in values for v in (value if kind == _SRATIONAL else [value])]
                data = struct.pack(f"<{len(flat)}{_FORMATS[kind]}", *flat)
                count = len(values)
            field = data.ljust(4, b"\x00") if len(data) <= 4 else struct.pack("<I", put(data))
            packed.append(struct.pack("<HHI", tag, kind, count) + field)
        return put(struct.pack("<H", len(packed)) + b"".join(packed) + b"\x00" * 4)

    width, height = 32, 24
    mosaic = np.random.default_rng(0).integers(0, 4096, (height, width)).astype("<u2").tobytes()
    sensor = [
        (254, _LONG, [0]),
        (256, _LONG, [width]),
        (257, _LONG, [height]),
        (258, _SHORT, [16]),
        (259, _SHORT, [1]),
        (262, _SHORT, [32803]),  # a colour filter array
        (273, _LONG, [put(mosaic)]),
        (277, _SHORT, [1]),
        (278, _LONG, [height]),
        (279, _LONG, [len(mosaic)]),
        (33421, _SHORT, [2, 2]),
        (33422, _BYTE, [0, 1, 1, 2]),  # RGGB
        (50717, _LONG, [4095]),
    ]
    camera = [
        (271, _ASCII, "Canon"),
        (272, _ASCII, "Canon EOS 5D"),
        (274, _SHORT, [orientation]),
        (50706, _BYTE, [1, 4, 0, 0]),  # DNGVersion
        (50708, _ASCII, "Canon EOS 5D"),
        (
            50721,
            _SRATIONAL,
            [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)],
        ),
    ]
    if preview is None:
        first = ifd(sensor + camera)
    else:
        shown = Image.open(io.BytesIO(preview)).size
        first = ifd(
            [
                (254, _LONG, [1]),  # a reduced-resolution copy of the photo
                (256, _LONG, [shown[0]]),
                (257, _LONG, [shown[1]]),
                (258, _SHORT, [8, 8, 8]),
                (259, _SHORT, [7]),  # JPEG
                (262, _SHORT, [6]),  # YCbCr
                (273, _LONG, [put(preview)]),
                (277, _SHORT, [3]),
                (278, _LONG, [shown[1]]),
                (279, _LONG, [len(preview)]),
                (330, _LONG, [ifd(sensor)]),  # the sensor image as a SubIFD
                *camera,
            ]
        )
    out[4:8] = struct.pack("<I", first)
    return bytes(out)


@pytest.fixture
def rawpy_itself() -> ModuleType:
    return pytest.importorskip("rawpy")


def test_rawpy_gives_a_real_dng_its_preview_turned_upright(
    tmp_path: Path, rawpy_itself: ModuleType
) -> None:
    path = tmp_path / "IMG_0001.DNG"
    path.write_bytes(dng(jpeg(marked()), orientation=6))
    assert_turned_upright_once(load_image(path))


def test_rawpy_on_a_real_dng_without_a_preview_says_so(
    tmp_path: Path, rawpy_itself: ModuleType
) -> None:
    path = tmp_path / "bare.dng"
    path.write_bytes(dng(None))
    assert decode_error(path).reason == "RAW file without an embedded preview"


@pytest.mark.parametrize("kept", [0.9, 0.5, 0.05])
def test_rawpy_on_a_truncated_dng_gives_a_reason(
    tmp_path: Path, rawpy_itself: ModuleType, kept: float
) -> None:
    whole = dng(jpeg(noise()))
    path = tmp_path / "cut.dng"
    path.write_bytes(whole[: int(len(whole) * kept)])
    assert decode_error(path).reason in {
        "truncated or unreadable RAW file",
        "not a RAW file LibRaw reads (another format, or damaged)",
    }
