"""Rendering results: Rich tables for people, JSON (the documented shapes) for scripts.

Rich is imported only where a table or a bar is drawn: JSON output, which scripts and cold
searches print, does without its 50-90 ms of imports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

from clipcli.literal import shown, unicode_safe_data
from clipcli.progress import NoProgress, ProgressReporter

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from clipcli.classifier import Classification
    from clipcli.indexer import IndexReport
    from clipcli.searcher import SearchHit

BAR_WIDTH = 24


def to_json(data: Any) -> str:
    return json.dumps(unicode_safe_data(data), indent=2, ensure_ascii=False)


def classifications_json(results: Sequence[Classification]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for result in results:
        if result.warning is not None:
            continue  # a folder with no images: not an image, and warned about on stderr
        if result.error is not None:
            out.append({"path": result.path, "error": result.error})
        else:
            out.append(
                {"path": result.path, "predictions": [asdict(p) for p in result.predictions or []]}
            )
    return out


def index_report_json(report: IndexReport) -> dict[str, Any]:
    return asdict(report)


def search_json(hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
    return [asdict(hit) for hit in hits]


def _bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH)
    return "█" * filled + "░" * (BAR_WIDTH - filled)


def render_classifications(console: Console, results: Sequence[Classification]) -> None:
    for result in results:
        if result.predictions is None:
            continue  # errors and warnings are reported on stderr by the caller
        table = _table(title=result.path, title_justify="left", show_edge=False)
        table.add_column("label")
        table.add_column("probability", justify="right")
        table.add_column("", no_wrap=True)
        table.add_column("cosine", justify="right", style="dim")
        for prediction in result.predictions or []:
            table.add_row(
                prediction.label,
                f"{prediction.score:6.1%}",
                f"[green]{_bar(prediction.score)}[/green]",
                f"{prediction.similarity:.3f}",
            )
        console.print(table)
        console.print()


def render_search(console: Console, hits: Sequence[SearchHit]) -> None:
    table = _table(show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    for hit in hits:
        table.add_row(str(hit.rank), f"{hit.score:.3f}", hit.path)
    console.print(table)


def index_summary(report: IndexReport) -> tuple[str, str]:
    """The one-line summary of an index run, as the count and the words after it."""
    noun = "image" if report.total == 1 else "images"
    return str(report.total), (
        f" {noun} in {shown(report.index)} ({shown(report.model)}): "
        f"{report.added} added, {report.updated} updated, {report.moved} moved, "
        f"{report.removed} removed, {report.unchanged} unchanged, "
        f"{len(report.skipped)} skipped in {report.seconds:.1f}s"
    )


def write_index_report(report: IndexReport, out: TextIO, console: Callable[[], Console]) -> None:
    """The summary as one line, never wrapped; its count in bold on a terminal."""
    count, words = index_summary(report)
    if not is_terminal(out):
        out.write(count + words + "\n")
        return
    from rich.text import Text

    console().print(Text.assemble((count, "bold"), words), soft_wrap=True)


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@contextmanager
def progress_for(console: Callable[[], Console], *, enabled: bool) -> Iterator[ProgressReporter]:
    """A live progress bar on an interactive stderr, nothing otherwise (pipes, CI, --json)."""
    if not (enabled and console().is_terminal):
        yield NoProgress()
        return
    from clipcli.progress_bar import RichProgress  # Rich's progress module: only when drawn

    with RichProgress(console()) as progress:
        yield progress


def _table(**options: Any) -> Table:
    from rich.table import Table

    return Table(**options)
