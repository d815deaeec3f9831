"""Renaming a file without ever replacing one: POSIX rename() silently overwrites its target,
so a check before it would leave a moment in which another file could be lost."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

# Linux's renameat2() flag, and the directory argument that means "relative to the cwd".
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
# What a filesystem answers when it cannot do a no-replace rename or a hard link (FAT, exFAT,
# some network shares): then the plain fallback is all there is.
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM})


def rename_exclusive(source: Path, target: Path) -> None:
    """Rename `source` to `target` in one step, or raise FileExistsError if `target` exists
    (anything, even a dangling link). Raises OSError with errno EXDEV when they are on
    different filesystems, as rename() does."""
    if sys.platform == "win32":
        os.rename(source, target)  # Windows' rename never replaces an existing file
        return
    code = _renamed_no_replace(source, target)
    if code == 0:
        return
    if code is not None and code not in _UNSUPPORTED:
        raise OSError(code, os.strerror(code), str(source), None, str(target))
    _linked_then_unlinked(source, target)


def _linked_then_unlinked(source: Path, target: Path) -> None:
    """link() refuses an existing target as renameat2 does; the file has two names for a
    moment, which a kill could leave (the next run then finds the same bytes at both)."""
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        # No hard links here either: the check and the rename are two steps, which only
        # another program writing the same name at the same moment could come between.
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.rename(source, target)
        return
    os.unlink(source)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """glibc's renameat2 (Linux 3.15, glibc 2.28), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    with contextlib.suppress(OSError):
        function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
        if function is not None:
            function.argtypes = [
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_uint,
            ]
            function.restype = ctypes.c_int
            return function
    return None


def _renamed_no_replace(source: Path, target: Path) -> int | None:
    """renameat2(RENAME_NOREPLACE): 0 when done, else its errno; None where there is none."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return None
    import ctypes

    paths = (os.fsencode(source), os.fsencode(target))
    if renameat2(_AT_FDCWD, paths[0], _AT_FDCWD, paths[1], _RENAME_NOREPLACE) == 0:
        return 0
    return ctypes.get_errno()
