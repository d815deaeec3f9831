"""pyarrow, which reads and writes the shards' parquet: an optional dependency (the shards
extra), so its absence is a usage error with the install hint, not a traceback."""

from __future__ import annotations

from clipcli.errors import UsageError

INSTALL_HINT = "pip install 'clipcli[shards]'"


def require_pyarrow() -> None:
    """A UsageError with the install hint when pyarrow, which reads and writes the parquet
    files, is not installed."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError(
            "shards need pyarrow (their metadata is parquet), which is not installed",
            hint=INSTALL_HINT,
        ) from None
