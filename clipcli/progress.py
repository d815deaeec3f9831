"""How long-running work reports progress without printing: cli.py draws it, tests may count it."""

from __future__ import annotations

from typing import Protocol


class ProgressReporter(Protocol):
    def phase(self, description: str, total: int) -> None:
        """A new stage of work with `total` steps begins."""

    def advance(self, count: int) -> None:
        """`count` more steps of the current stage are done."""


class NoProgress:
    """A reporter that discards everything."""

    def phase(self, description: str, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass
