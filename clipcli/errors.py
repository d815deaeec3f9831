"""The one exception family that lower layers raise and cli.py turns into a message and exit code.

Exit codes (documented in the README):
  0  success
  1  a runtime problem: unreadable images, weights not available, missing index, busy index
  2  a usage problem: bad arguments, unknown model, index built with another model
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class ClipcliError(Exception):
    """An error whose message is written for the user; cli.py prints it and exits."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(ClipcliError):
    """Arguments or settings that cannot work as given."""

    exit_code = EXIT_USAGE


class UnknownModelError(UsageError):
    """A model name open_clip does not know."""


class ModelMismatchError(UsageError):
    """An index built with one model, asked to take vectors from another."""


class WeightsUnavailableError(ClipcliError):
    """Weights neither in the local cache nor downloadable."""


class IndexMissingError(ClipcliError):
    """Search on an index that does not exist or holds no images."""


class IndexBusyError(ClipcliError):
    """Another process is writing to the same index."""


class CatalogUnreadableError(ClipcliError):
    """A catalog file SQLite cannot use: damaged, not SQLite at all, or not accessible."""
