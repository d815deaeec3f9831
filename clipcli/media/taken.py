"""When a photo was taken: the camera's clock as EXIF records it, else the file's modification
time.

Times are wall-clock seconds: a clock's reading counted as seconds since 1970-01-01 00:00 on
that same clock, that is, read as if it were UTC. EXIF dates name no time zone, so 12:30 on a
camera in Tokyo and 12:30 on one in Paris are both 12:30. A modification time, an instant, is
turned into this machine's clock reading at that instant, so a file without EXIF is dated as
`ls -l` shows it. Dates to compare with (the days of a search's --since and --until) go
through wall_seconds, so that a day is the same calendar day for both.
"""

from __future__ import annotations

import calendar
import os
import re
import stat
import time
import warnings
from datetime import datetime

from clipcli.media import heif

EXIF_IFD = 0x8769  # the Exif sub-IFD, where the camera's own tags are
DATE_TIME_ORIGINAL = 36867  # when the shutter fired
DATE_TIME = 306  # when the file was last written, by the camera or an editor

# "YYYY:MM:DD HH:MM:SS" as the standard writes it; some software writes dashes or a "T".
_EXIF_DATE = re.compile(r"(\d{4})[:-](\d\d)[:-](\d\d)[ T](\d\d):(\d\d):(\d\d)")


def taken_at(path: str | os.PathLike[str], mtime_ns: int) -> float:
    """When the photo at `path` was taken, in wall-clock seconds: EXIF DateTimeOriginal if it
    holds a valid date, else DateTime, else `mtime_ns` (the file's modification time).

    Reads only the file's header (Pillow opens it lazily; nothing is decoded), and never
    raises: a file that cannot be read or parsed is dated by its modification time.
    """
    found = exif_date(path)
    return found if found is not None else local_wall_seconds(mtime_ns)


def exif_date(path: str | os.PathLike[str]) -> float | None:
    """The EXIF date of the photo at `path` in wall-clock seconds, None if it has none."""
    from PIL import Image  # only once a photo is dated: an index run with nothing new needs none

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open
            return None
        with open(path, "rb") as handle, warnings.catch_warnings():
            # Pillow warns of a damaged EXIF block, and of a very large image, and reads on;
            # as clipcli.media.decode, these stay quiet.
            warnings.filterwarnings("ignore", module=r"PIL\.")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if heif.container(handle.read(heif.HEADER_SIZE)) == "HEIF":
                heif.register_heif_opener()  # an iPhone photo: Pillow alone cannot open it
            handle.seek(0)
            with Image.open(handle) as image:
                # Image's own getexif: PNG's would decode the whole image to find an eXIf
                # chunk after the pixels. Those before them, as Pillow writes it, are read.
                exif = Image.Image.getexif(image)
                values = (exif.get_ifd(EXIF_IFD).get(DATE_TIME_ORIGINAL), exif.get(DATE_TIME))
    except Exception:  # whatever a damaged file makes Pillow raise: then it has no date
        return None
    for value in values:
        found = parse_exif_date(value)
        if found is not None:
            return found
    return None


def parse_exif_date(value: object) -> float | None:
    """An EXIF date ("2021:07:04 12:30:00") in wall-clock seconds; None when it is not a
    valid date (cameras write "0000:00:00 00:00:00" or blanks for a clock never set)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    match = _EXIF_DATE.match(value.strip(" \x00"))
    if match is None:
        return None
    try:
        return wall_seconds(datetime(*(int(part) for part in match.groups())))
    except ValueError:  # month 13, day 0, hour 24...
        return None


def wall_seconds(moment: datetime) -> float:
    """A clock reading in wall-clock seconds: `moment`'s date and time as written (any time
    zone it names is not applied), counted as if they were UTC."""
    return calendar.timegm(moment.timetuple()) + moment.microsecond / 1e6


def local_wall_seconds(mtime_ns: int) -> float:
    """An instant (nanoseconds since the epoch, as st_mtime_ns) in wall-clock seconds: what
    this machine's clock read at that instant."""
    seconds, nanoseconds = divmod(mtime_ns, 1_000_000_000)
    try:
        return calendar.timegm(time.localtime(seconds)) + nanoseconds / 1e9
    except (OverflowError, OSError, ValueError):  # beyond what the C library can convert
        return mtime_ns / 1e9
