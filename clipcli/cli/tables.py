"""The table view (`--format table`, the default on a terminal), drawn with Rich.

Every string from the user or the disk goes in as a `Text`, never as a `str`, which Rich would
read as markup (`[red]x.jpg` would lose `[red]`) and emoji codes (`:cat:`); `shown` puts it on
one line first. On a terminal long paths fold inside their column; anywhere else (a table
asked for in a pipe) the table is drawn at its natural width, so nothing wraps, and without
the spaces that pad the ends of its lines.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from clipcli.literal import shown

if TYPE_CHECKING:
    from clipcli.classify import Classification
    from clipcli.evaluate import EvalReport
    from clipcli.search import SearchHit
    from clipcli.zeroshot.scorer import Prediction
    from clipcli.zeroshot.thresholds import Thresholds

BAR_WIDTH = 24
SHORT_BAR_WIDTH = 10
# Up to this many images get a table each, with every label's bar; more (a folder, usually)
# get one line each, so that a hundred photos do not scroll past as a hundred tables.
DETAILED_UP_TO = 3
UNLIMITED = 10**6
LITERAL = {"markup": False, "emoji": False, "highlight": False}  # for a Console


def _bar(fraction: float, width: int = BAR_WIDTH) -> Text:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return Text("█" * filled + "░" * (width - filled), style="green")


def _literal(text: str, style: str = "") -> Text:
    return Text(shown(text), style=style)


NONE_OF_THESE = "(none of these)"  # a multi-label answer with no label above its floor


def render_classifications(console: Console, results: Sequence[Classification]) -> None:
    """A table per image, or one line per image when there are more than DETAILED_UP_TO."""
    classified = [result for result in results if result.predictions is not None]
    if len(classified) > DETAILED_UP_TO:
        table = _compact_table(classified, runners_up=True)
        if console.is_terminal and _natural_width(console, table) > console.width:
            table = _compact_table(classified, runners_up=False)  # rather than fold the paths
        _emit(console, table)
        return
    for result in classified:  # errors and warnings are reported on stderr by the caller
        _emit(console, _literal(result.path, "bold"), soft_wrap=True)  # copied whole
        table = Table(show_edge=False, pad_edge=False)
        table.add_column("label")
        table.add_column("probability", justify="right")
        table.add_column("", no_wrap=True)
        table.add_column("cosine", justify="right", style="dim")
        if result.abstain:
            table.add_row(Text(NONE_OF_THESE, "dim"), "", "", "")
        for prediction in result.predictions or []:
            table.add_row(
                _literal(prediction.label),
                f"{prediction.score:6.1%}",
                _bar(prediction.score),
                f"{prediction.similarity:.3f}",
            )
        _emit(console, table)
        _emit(console, Text())


def _compact_table(results: Sequence[Classification], *, runners_up: bool) -> Table:
    """One row per image: its best label, the probability and bar, the path, and with
    `runners_up` the other labels."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("label")
    table.add_column("probability", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("path", overflow="fold")
    runners_up = runners_up and any(len(result.predictions or []) > 1 for result in results)
    if runners_up:
        table.add_column("next", no_wrap=True, overflow="ellipsis", style="dim")
    for result in results:
        if not result.predictions:  # a multi-label answer that gave no label
            none: list[RenderableType] = [Text(NONE_OF_THESE, "dim"), "", "", _literal(result.path)]
            table.add_row(*none, *([""] if runners_up else []))
            continue
        best, *rest = result.predictions
        row: list[RenderableType] = [
            _literal(best.label),
            f"{best.score:6.1%}",
            _bar(best.score, SHORT_BAR_WIDTH),
            _literal(result.path),
        ]
        if runners_up:
            row.append(_runners_up(rest))
        table.add_row(*row)
    return table


def _runners_up(predictions: Sequence[Prediction]) -> Text:
    return Text(", ").join(Text.assemble(shown(p.label), f" {p.score:.1%}") for p in predictions)


def render_search(console: Console, hits: Sequence[SearchHit]) -> None:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    for hit in hits:
        table.add_row(str(hit.rank), f"{hit.score:.3f}", _literal(hit.path))
    _emit(console, table)


def render_eval(console: Console, report: EvalReport) -> None:
    """The template sets side by side, best first, then the best one's classes, worst first."""
    ranked = report.best_first()
    k = ranked[0].top_k
    scores = Table(show_edge=False, pad_edge=False)
    scores.add_column("templates")
    for title in ("acc@1", f"acc@{k}", "mean per-class recall"):
        scores.add_column(title, justify="right")
    for score in ranked:
        scores.add_row(
            _literal(score.templates),
            _percent(score.acc1),
            _percent(score.acc5),
            _percent(score.mean_per_class_recall),
        )
    _emit(console, scores)
    best = ranked[0]
    console.print()
    _emit(console, _literal(f"per class, with {best.templates} templates:", "bold"))
    classes = Table(show_edge=False, pad_edge=False)
    classes.add_column("label")
    for title in ("images", "recall", "precision"):
        classes.add_column(title, justify="right")
    classes.add_column("most often taken for")
    for figures in sorted(best.per_class, key=lambda f: (f.recall, f.label)):
        classes.add_row(
            _literal(figures.label),
            str(figures.support),
            _percent(figures.recall),
            _percent(figures.precision),
            _literal(figures.confused_with or ""),
        )
    _emit(console, classes)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def render_thresholds(console: Console, thresholds: Thresholds) -> None:
    """Each label's calibrated threshold, with the precision and recall it had."""
    _emit(
        console,
        _literal(
            f"thresholds for precision {_percent(thresholds.precision_target)}, with "
            f"{thresholds.templates} templates:",
            "bold",
        ),
    )
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("label")
    for title in ("threshold", "precision", "recall", "images"):
        table.add_column(title, justify="right")
    for entry in thresholds.per_label:
        table.add_row(
            _literal(entry.label),
            "never" if entry.threshold is None else f"{entry.threshold:.4f}",
            "" if entry.precision is None else _percent(entry.precision),
            _percent(entry.recall),
            str(entry.support),
        )
    _emit(console, table)


def render_summary(console: Console, count: str, words: str) -> None:
    """A summary line on a terminal: its count in bold, never wrapped."""
    console.print(Text.assemble((count, "bold"), words), soft_wrap=True)


def _emit(console: Console, renderable: RenderableType, *, soft_wrap: bool = False) -> None:
    """On a terminal, as Rich lays it out for its width (or with `soft_wrap` as one line the
    terminal folds); elsewhere at its natural width, without the padding at the ends of lines."""
    if console.is_terminal:
        console.print(renderable, soft_wrap=soft_wrap)
        return
    width = _natural_width(console, renderable)
    wide = Console(file=io.StringIO(), width=max(width, 1), color_system=None, **LITERAL)
    wide.print(renderable)
    text = wide.file.getvalue()  # type: ignore[attr-defined]
    console.file.write("".join(line.rstrip() + "\n" for line in text.splitlines()))


def _natural_width(console: Console, renderable: RenderableType) -> int:
    """The width `renderable` takes when nothing has to wrap."""
    return Measurement.get(console, console.options.update_width(UNLIMITED), renderable).maximum
