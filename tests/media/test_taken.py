"""Specification of when a photo was taken: EXIF DateTimeOriginal, else DateTime, else the
file's modification time, all as wall-clock seconds (a clock reading counted as if UTC)."""

from __future__ import annotations

import os
import struct
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from clipcli.media.taken import (
    DATE_TIME,
    DATE_TIME_ORIGINAL,
    EXIF_IFD,
    exif_date,
    local_wall_seconds,
    parse_exif_date,
    taken_at,
    wall_seconds,
)

JULY_4TH = datetime(2021, 7, 4, 12, 30)
# 2021-07-04 12:30:00 read as if it were UTC.
JULY_4TH_SECONDS = 1_625_401_800.0
MTIME_NS = 1_500_000_000_123_456_789


def photo(path: Path, *, original: str | None = None, written: str | None = None) -> Path:
    """A small image saved with the EXIF dates given (as the camera writes them)."""
    exif = Image.Exif()
    if original is not None:
        exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = original
    if written is not None:
        exif[DATE_TIME] = written
    # As bytes: Pillow's PNG writer leaves out an Exif whose first IFD is empty.
    Image.new("RGB", (32, 24), "orange").save(path, exif=exif.tobytes())
    return path


def test_a_wall_clock_reading_counts_as_if_it_were_utc() -> None:
    assert wall_seconds(JULY_4TH) == JULY_4TH_SECONDS
    assert wall_seconds(datetime(1970, 1, 1)) == 0.0
    assert wall_seconds(JULY_4TH + timedelta(microseconds=250_000)) == JULY_4TH_SECONDS + 0.25
    tokyo = timezone(timedelta(hours=9))
    assert wall_seconds(JULY_4TH.replace(tzinfo=tokyo)) == JULY_4TH_SECONDS  # as written


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp"])
def test_the_date_the_shutter_fired_is_read_from_exif(tmp_path: Path, suffix: str) -> None:
    path = photo(tmp_path / f"a.{suffix}", original="2021:07:04 12:30:00")

    assert taken_at(path, MTIME_NS) == JULY_4TH_SECONDS


def test_date_time_original_wins_over_date_time(tmp_path: Path) -> None:
    path = photo(tmp_path / "a.jpg", original="2021:07:04 12:30:00", written="2023:01:01 08:00:00")

    assert taken_at(path, MTIME_NS) == JULY_4TH_SECONDS


def test_without_date_time_original_the_date_time_tag_is_used(tmp_path: Path) -> None:
    path = photo(tmp_path / "a.jpg", written="2021:07:04 12:30:00")

    assert taken_at(path, MTIME_NS) == JULY_4TH_SECONDS


def test_an_unset_camera_clock_falls_back_to_date_time(tmp_path: Path) -> None:
    path = photo(tmp_path / "a.jpg", original="0000:00:00 00:00:00", written="2021:07:04 12:30:00")

    assert taken_at(path, MTIME_NS) == JULY_4TH_SECONDS


def test_a_file_without_exif_is_dated_by_its_mtime_on_this_machines_clock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (32, 24), "orange").save(path)
    mtime_ns = os.stat(path).st_mtime_ns

    found = taken_at(path, mtime_ns)

    local = datetime.fromtimestamp(mtime_ns / 1e9)  # naive: this machine's clock reading
    assert found == pytest.approx(wall_seconds(local), abs=1e-6)
    assert exif_date(path) is None


def test_the_mtime_is_read_in_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    if not hasattr(time, "tzset"):
        pytest.skip("time zones are set through TZ only where time.tzset exists")
    monkeypatch.setenv("TZ", "UTC-2")  # POSIX spelling of two hours east of UTC
    time.tzset()
    try:
        assert local_wall_seconds(MTIME_NS) == pytest.approx(MTIME_NS / 1e9 + 7200, abs=1e-6)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    "content",
    [b"", b"not an image at all", b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*garbage"],
    ids=["empty", "text", "damaged-exif"],
)
def test_a_damaged_file_is_dated_by_its_mtime_without_raising(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)

    assert taken_at(path, MTIME_NS) == local_wall_seconds(MTIME_NS)


def test_a_missing_file_or_a_folder_is_dated_by_the_mtime_given(tmp_path: Path) -> None:
    assert taken_at(tmp_path / "gone.jpg", MTIME_NS) == local_wall_seconds(MTIME_NS)
    assert taken_at(tmp_path, MTIME_NS) == local_wall_seconds(MTIME_NS)


def png_with_exif_after_its_pixels(path: Path, original: str) -> Path:
    """A PNG whose eXIf chunk comes after the image data (the specification allows either)."""
    Image.new("RGB", (32, 24), "orange").save(path)
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = original
    data = exif.tobytes()[6:]  # without the "Exif\0\0" a JPEG segment starts with
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + data))
    content = path.read_bytes()
    end = content.rindex(b"IEND") - 4
    path.write_bytes(content[:end] + chunk + content[end:])
    return path


def test_reading_the_date_decodes_no_pixels(tmp_path: Path, monkeypatch) -> None:
    before = photo(tmp_path / "before.png", original="2021:07:04 12:30:00")
    after = png_with_exif_after_its_pixels(tmp_path / "after.png", "2021:07:04 12:30:00")
    assert Image.open(after).getexif().get_ifd(EXIF_IFD)  # Pillow finds it by decoding

    decoded = []
    real = ImageFile.ImageFile.load

    def recording(self: ImageFile.ImageFile):
        decoded.append(self.filename or self.fp)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording)

    assert taken_at(before, MTIME_NS) == JULY_4TH_SECONDS
    assert taken_at(after, MTIME_NS) == local_wall_seconds(MTIME_NS)  # not worth a decode
    assert decoded == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021:07:04 12:30:00", JULY_4TH_SECONDS),
        ("2021:07:04 12:30:00\x00", JULY_4TH_SECONDS),
        (b"2021:07:04 12:30:00", JULY_4TH_SECONDS),
        ("2021-07-04T12:30:00", JULY_4TH_SECONDS),
        ("0000:00:00 00:00:00", None),
        ("    :  :     :  :  ", None),
        ("2021:13:04 12:30:00", None),
        ("", None),
        (None, None),
        (20210704, None),
    ],
)
def test_exif_dates_are_parsed_and_invalid_ones_refused(value: object, expected) -> None:
    assert parse_exif_date(value) == expected


def test_an_iphone_photo_is_dated_by_its_exif(tmp_path):
    import pillow_heif
    from PIL import Image

    from clipcli.media.taken import taken_at, wall_seconds

    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2022:03:04 05:06:07"
    photo = tmp_path / "IMG_0001.HEIC"
    pillow_heif.from_pillow(Image.new("RGB", (32, 24), "red")).save(photo, exif=exif.tobytes())
    from datetime import datetime

    assert taken_at(photo, 0) == wall_seconds(datetime(2022, 3, 4, 5, 6, 7))
