"""Advisory file locks: one writer per index, one exporter per model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Busy(Exception):
    """Another process holds the lock, and the caller chose not to wait."""


@contextmanager
def exclusive(lock_file: Path, *, wait: bool) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if missing) for the block.

    Without `wait`, a lock held elsewhere raises Busy at once. Windows has no advisory locks:
    there nothing is held, and the callers' atomic renames and SQLite transactions still keep
    every file whole.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        try:
            import fcntl
        except ImportError:
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy(str(lock_file)) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
