"""Files written so that a crash leaves each whole or absent: a temporary name, flushed to the
disk, then renamed; the folder's entry flushed after it."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

# A temporary file's name ends so: no reader of the layout takes it for a shard (.npy, .parquet).
TEMPORARY_SUFFIX = ".part"


def temporary_name(final: Path) -> Path:
    """A name beside `final` that no reader of the layout takes for a shard (it ends in .part,
    not .npy or .parquet), unique to this writer."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def write_durably(final: Path, data: bytes) -> None:
    """Write `data` under a temporary name, flush it to the disk, then rename it to `final`:
    after a crash the file is whole or absent, never short."""
    temporary = temporary_name(final)
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    sync_folder(final.parent)


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the renames into it) to the disk, where the system allows."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # Windows opens no folders; its renames are durable as they are
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
