"""Keeping libraries' own chatter off the user's terminal.

The ONNX exporter prints whole graphs to stderr from C++ when it gives up, and the quantiser
logs advice to pre-process on every run; clipcli tells the user what matters itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null, and the root logger hears only errors, for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        root.setLevel(level)
