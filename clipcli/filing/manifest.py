"""A CSV record of what went where, appended one row as each file lands and put on disk at
once: a kill loses at most the row of the file in flight, and the file is never rewritten, so
the rows of earlier runs stay as they were."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TextIO

from clipcli.errors import ClipcliError

# Paths are written as they are on disk: a file name that is not UTF-8 keeps its bytes.
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


def read_rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a manifest as {column: value} (none if there is no file yet); a last row
    cut short by a power cut is left out."""
    if not path.exists():
        return []
    with open(path, encoding=_ENCODING, errors=_ERRORS, newline="") as handle:
        rows = list(csv.reader(handle))
    if rows and rows[0] != list(columns):
        raise _not_this_manifest(path, columns)
    return [dict(zip(columns, row, strict=True)) for row in rows[1:] if len(row) == len(columns)]


class Manifest:
    """An open manifest: created with its header row if missing, appended to otherwise."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.columns = list(columns)
        self._handle: TextIO | None = None

    def __enter__(self) -> Manifest:
        header = _header(self.path)
        if header is not None and header != self.columns:
            raise _not_this_manifest(self.path, self.columns)
        ends_a_line = _ends_a_line(self.path)
        self._handle = open(self.path, "a", encoding=_ENCODING, errors=_ERRORS, newline="")
        if not ends_a_line:  # a row cut short: the next one starts on a line of its own
            self._handle.write("\n")
        if header is None:
            self.append(self.columns)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def append(self, values: Sequence[str]) -> None:
        """Add one row, and see it on disk before going on."""
        if self._handle is None:
            raise RuntimeError("the manifest is not open")
        if len(values) != len(self.columns):
            raise ValueError(f"a row of {len(values)} values for {len(self.columns)} columns")
        csv.writer(self._handle, lineterminator="\n").writerow(values)
        self._handle.flush()
        os.fsync(self._handle.fileno())


def _header(path: Path) -> list[str] | None:
    """The first row of an existing manifest; None when there is none yet (or it is empty,
    as a kill just after creating it leaves it)."""
    try:
        with open(path, encoding=_ENCODING, errors=_ERRORS, newline="") as handle:
            return next(csv.reader(handle), None)
    except FileNotFoundError:
        return None


def _ends_a_line(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return True
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
    except FileNotFoundError:
        return True


def _not_this_manifest(path: Path, columns: Sequence[str]) -> ClipcliError:
    return ClipcliError(
        f"{path}: not a manifest of this kind (its first row is not {','.join(columns)})",
        hint="move it away, or file into another folder",
    )
