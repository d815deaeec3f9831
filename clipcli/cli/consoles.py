"""Rich's consoles, made on first use, so that the formats that need no Rich never import it."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@functools.cache
def stdout() -> Console:
    """The console for tables. Whatever it is given is drawn literally: no markup, no emoji
    codes, no highlighting."""
    from rich.console import Console

    return Console(markup=False, emoji=False, highlight=False)


@functools.cache
def stderr() -> Console:
    """The console for progress bars on an interactive stderr."""
    from rich.console import Console

    return Console(stderr=True)
