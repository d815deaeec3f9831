"""A file's identity by content: what the catalog and the thumbnail cache key on."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

HASH_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, read in chunks so a large video-sized file costs no memory."""
    with open(path, "rb") as handle:
        return stream_sha256(handle)


def stream_sha256(handle: BinaryIO) -> str:
    """The SHA-256 of what is left to read in an open binary file."""
    digest = hashlib.sha256()
    while chunk := handle.read(HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()
