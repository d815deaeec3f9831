"""Output files written whole or not at all: a reader (an image viewer, a browser) never sees
half a picture, and a write that fails leaves the previous file as it was."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from clipcli.errors import ClipcliError


def write_file(out: Path, data: bytes, *, what: str = "the file") -> None:
    """Write `data` to a temporary file beside `out`, then rename it over `out`.

    Raises ClipcliError ("OUT: cannot write WHAT (reason)") when the folder is missing or
    not writable; an interrupt too leaves no temporary file behind.
    """
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    try:
        with open(temporary, "xb") as handle:  # "x": created here, with the umask's mode
            handle.write(data)
        os.replace(temporary, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            raise ClipcliError(f"{out}: cannot write {what} ({reason})") from None
        raise
