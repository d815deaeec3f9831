"""The index folder an index run writes to: made if missing, locked for one writer, and left as
it was found when the run fails before it stores a photo."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from clipcli import locks
from clipcli.errors import ClipcliError, IndexBusyError, UsageError
from clipcli.store.catalog import CATALOG_FILE, Catalog

LOCK_FILE = "index.lock"


@contextmanager
def writing(folder: Path) -> Iterator[None]:
    """Make `folder` if missing and hold its writer lock for the block.

    When the block fails with no photo in the catalog (an unknown model, weights that cannot
    load), the catalog, lock file and folders made for this run are removed again: a failed
    run must not leave an index stamped with a model it never used, nor one at all where
    there was none.
    """
    created = _make_folder(folder)
    catalog, lock = folder / CATALOG_FILE, folder / LOCK_FILE
    traces = [path for path in (catalog, lock) if not path.exists()]
    try:
        with _exclusive(lock):
            try:
                yield
            except BaseException:
                if catalog in traces and not _holds_images(folder):
                    for path in (catalog, Path(f"{catalog}-wal"), Path(f"{catalog}-shm")):
                        with contextlib.suppress(OSError):
                            path.unlink()
                raise
    except IndexBusyError:
        raise  # another run's folder and files: not this run's to remove
    except BaseException:
        if not catalog.exists():
            _remove(traces, created)
        raise


def _make_folder(folder: Path) -> list[Path]:
    """Create the index folder, or say why it cannot be one before anything is written.

    Returns the folders this call created, outermost first.
    """
    hint = "give --index a folder (it is created if missing)"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: is a file, not an index folder", hint=hint)
    missing = []
    ancestor = Path(os.path.abspath(folder))
    while not ancestor.exists() and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{folder}: a parent of it is a file, not a folder", hint=hint) from None
    except OSError as exc:
        raise ClipcliError(
            f"{folder}: cannot create the index folder ({exc.strerror or exc})"
        ) from None
    return missing[::-1]


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """One writer per index: a second `clipcli index` exits at once instead of interleaving."""
    try:
        with locks.exclusive(lock, wait=False):
            yield
    except locks.Busy:
        raise IndexBusyError(
            f"{lock.parent}: another `clipcli index` is updating this index",
            hint="wait for it to finish, then run again",
        ) from None


def _holds_images(folder: Path) -> bool:
    """Whether the catalog in `folder` stores any photo (when in doubt, yes: keep it)."""
    try:
        with Catalog(folder, read_only=True) as catalog:
            return not catalog.is_blank and catalog.count() > 0
    except ClipcliError:
        return True


def _remove(traces: Sequence[Path], created: Sequence[Path]) -> None:
    """Remove the files and the (still empty) folders a failed run made."""
    for path in traces:
        with contextlib.suppress(OSError):
            path.unlink()
    for made in reversed(created):
        try:
            made.rmdir()
        except OSError:
            return  # something else is in it now: leave it, and the folders above it
