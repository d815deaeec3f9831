"""Writing results: the formats of `--format` (README.md defines each), for people and scripts.

The line formats (plain, tsv, csv, jsonl, json) are written straight to the stream, one result
per line where the format has lines, never wrapped or padded. Tables are drawn with Rich
(tables.py), which is imported only then: JSON and the line formats, which scripts and cold
searches print, do without its 50-90 ms of imports.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from enum import Enum
from typing import TYPE_CHECKING, Any, TextIO

from clipcli.errors import UsageError
from clipcli.literal import escaped, shown, unicode_safe_data
from clipcli.progress import NoProgress, ProgressReporter

if TYPE_CHECKING:
    from rich.console import Console

    from clipcli.classify import Classification
    from clipcli.evaluate import EvalReport
    from clipcli.index import IndexReport
    from clipcli.search import SearchHit
    from clipcli.store.catalog_repair import RepairReport
    from clipcli.zeroshot.scorer import Prediction
    from clipcli.zeroshot.thresholds import Thresholds


class Format(str, Enum):
    table = "table"
    plain = "plain"
    tsv = "tsv"
    csv = "csv"
    jsonl = "jsonl"
    json = "json"


CLASSIFY_COLUMNS = ["path", "rank", "label", "score", "similarity", "error"]
SEARCH_COLUMNS = ["rank", "path", "score"]
LOST_NAMED = 3  # lost photos a repair names on stderr; --json lists every one


def choose_format(asked: Format | None, json_flag: bool, stream: TextIO) -> Format:
    """The format to write: `--format`, or `--json`, else a table on a terminal and plain
    lines everywhere else (pipes, files, CI)."""
    if json_flag:
        if asked not in (None, Format.json):
            raise UsageError(
                f"--json and --format {asked.value} ask for two formats", hint="give one of them"
            )
        return Format.json
    if asked is not None:
        return asked
    return Format.table if is_terminal(stream) else Format.plain


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# -- the JSON shapes (the documented contract) -------------------------------------------------


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
            predictions = [_prediction_json(p) for p in result.predictions or []]
            entry: dict[str, Any] = {"path": result.path, "predictions": predictions}
            if result.abstain is not None:  # --multi
                entry.update(labels=result.labels, abstain=result.abstain)
            out.append(entry)
    return out


def _prediction_json(prediction: Prediction) -> dict[str, Any]:
    """A prediction's fields; "sigmoid" only for models trained with a sigmoid loss."""
    data = asdict(prediction)
    if data["sigmoid"] is None:
        del data["sigmoid"]
    return data


def index_report_json(report: IndexReport) -> dict[str, Any]:
    data = asdict(report)
    del data["unreachable"]  # said on stderr
    if report.repaired is None:
        del data["repaired"]
    return data


def search_json(hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
    return [asdict(hit) for hit in hits]


def eval_json(report: EvalReport) -> list[dict[str, Any]]:
    """One object per template set, in the order they were asked for; with --thresholds, the
    set they were calibrated on also has "thresholds" (the file's per-label entries)."""
    skipped = [asdict(item) for item in report.skipped]
    objects = [
        {
            "dataset": report.dataset,
            "model": report.model,
            "templates": score.templates,
            "classes": len(report.labels),
            "images": report.images,
            "skipped": skipped,
            "acc1": score.acc1,
            "acc5": score.acc5,
            "mean_per_class_recall": score.mean_per_class_recall,
            "per_class": [asdict(figures) for figures in score.per_class],
            "confusion": score.confusion,
            "seconds": report.seconds,
        }
        for score in report.scores
    ]
    if report.thresholds is not None:
        for entry in objects:
            if entry["templates"] == report.thresholds.templates:
                entry["thresholds"] = [asdict(label) for label in report.thresholds.per_label]
    return objects


# -- writing each format -------------------------------------------------------------------------


def write_classifications(
    form: Format, results: Sequence[Classification], out: TextIO, console: Callable[[], Console]
) -> None:
    """`results` in `form`; errors and empty folders are left to stderr, except in the formats
    that carry every entry of the JSON (json, jsonl, tsv, csv)."""
    if form is Format.table:
        from clipcli.cli import tables

        tables.render_classifications(console(), results)
    elif form is Format.json:
        out.write(to_json(classifications_json(results)) + "\n")
    elif form is Format.jsonl:
        _write_jsonl(out, classifications_json(results))
    elif form is Format.plain:
        for result in results:
            if result.abstain:  # one line still, so that no image goes unmentioned
                out.write(f"{escaped(result.path)}\t\t\n")
            for prediction in result.predictions or []:
                out.write(
                    f"{escaped(result.path)}\t{escaped(prediction.label)}\t{prediction.score:.3f}\n"
                )
    else:
        _write_rows(form, out, CLASSIFY_COLUMNS, _classification_rows(results))


def _classification_rows(results: Sequence[Classification]) -> Iterator[list[Any]]:
    for result in results:
        if result.error is not None or result.abstain:
            yield [result.path, "", "", "", "", result.error or ""]
        for rank, prediction in enumerate(result.predictions or [], 1):
            yield [
                result.path,
                rank,
                prediction.label,
                repr(prediction.score),
                repr(prediction.similarity),
                "",
            ]


def write_search(
    form: Format, hits: Sequence[SearchHit], out: TextIO, console: Callable[[], Console]
) -> None:
    """The hits, best first, in `form`."""
    if form is Format.table:
        from clipcli.cli import tables

        tables.render_search(console(), hits)
    elif form is Format.json:
        out.write(to_json(search_json(hits)) + "\n")
    elif form is Format.jsonl:
        _write_jsonl(out, search_json(hits))
    elif form is Format.plain:
        for hit in hits:
            out.write(f"{escaped(hit.path)}\t{hit.score:.3f}\n")
    else:
        rows = ([hit.rank, hit.path, repr(hit.score)] for hit in hits)
        _write_rows(form, out, SEARCH_COLUMNS, rows)


def write_paths(hits: Sequence[SearchHit], out: TextIO, *, null: bool) -> None:
    """Only the paths: one a line (escaped as in plain), or with `null` each followed by a NUL
    byte and written byte for byte as the file system has it, for `xargs -0`."""
    if not null:
        for hit in hits:
            out.write(escaped(hit.path) + "\n")
        return
    out.flush()  # what the text layer holds goes first
    binary = out.buffer
    for hit in hits:
        binary.write(os.fsencode(hit.path) + b"\0")
    binary.flush()


def _write_jsonl(out: TextIO, entries: Iterable[dict[str, Any]]) -> None:
    for entry in entries:
        out.write(json.dumps(unicode_safe_data(entry), ensure_ascii=False) + "\n")


def _write_rows(form: Format, out: TextIO, header: list[str], rows: Iterable[list[Any]]) -> None:
    """tsv: fields escaped, so that a row is always one line; csv: quoted as the csv module
    does (a field may then span lines), with undecodable bytes as `\\xNN`."""
    if form is Format.tsv:
        out.write("\t".join(header) + "\n")
        for row in rows:
            out.write("\t".join(escaped(str(field)) for field in row) + "\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(unicode_safe_data(row) for row in rows)


def index_summary(report: IndexReport) -> tuple[str, str]:
    """The one-line summary of an index run, as the count and the words after it."""
    noun = "image" if report.total == 1 else "images"
    return str(report.total), (
        f" {noun} in {shown(report.index)} ({shown(report.model)}): "
        f"{report.added} added, {report.updated} updated, {report.moved} moved, "
        f"{report.removed} removed, {report.unchanged} unchanged, "
        f"{len(report.skipped)} skipped in {report.seconds:.1f}s"
    )


def repair_warning(repaired: RepairReport) -> str:
    """What a repair kept and lost, and where the damaged file is, as one line."""
    lost = "an uncounted number" if repaired.lost is None else str(repaired.lost)
    named = repaired.lost_paths[:LOST_NAMED]
    if named:
        more = len(repaired.lost_paths) - len(named)
        lost += f" ({', '.join(named)}{f' and {more} more' if more else ''})"
    noun = "photo" if repaired.kept == 1 else "photos"
    return (
        f"repaired the damaged catalog: kept {repaired.kept} {noun}, lost {lost}; the damaged"
        f" file is kept as {repaired.damaged}"
    )


def write_index_report(report: IndexReport, out: TextIO, console: Callable[[], Console]) -> None:
    """The summary as one line, never wrapped; its count in bold on a terminal."""
    if not is_terminal(out):
        out.write("".join(index_summary(report)) + "\n")
        return
    from clipcli.cli import tables

    tables.render_summary(console(), *index_summary(report))


def eval_summary(report: EvalReport) -> str:
    """What an eval run looked at and how much of it came from the cache, as one line."""
    cached = report.images - min(report.embedded, report.images)
    return (
        f"{report.images} images in {len(report.labels)} classes of {shown(report.dataset)} "
        f"({shown(report.model)}): {report.embedded} embedded, {cached} from the cache, "
        f"{len(report.skipped)} skipped in {report.seconds:.1f}s"
    )


def write_eval(report: EvalReport, console: Callable[[], Console]) -> None:
    """The score tables (Rich draws them in pipes too, at their natural width) and the summary."""
    from clipcli.cli import tables

    tables.render_eval(console(), report)
    console().print()
    count, _, words = eval_summary(report).partition(" ")
    tables.render_summary(console(), count, " " + words)


def write_thresholds(
    thresholds: Thresholds, out: os.PathLike[str] | None, console: Callable[[], Console]
) -> None:
    """The calibrated thresholds as a table, and where they were written."""
    from clipcli.cli import tables

    console().print()
    tables.render_thresholds(console(), thresholds)
    if out is not None:
        console().print()
        tables.render_summary(
            console(), str(len(thresholds.per_label)), f" thresholds written to {os.fspath(out)}"
        )


@contextmanager
def progress_for(console: Callable[[], Console], *, enabled: bool) -> Iterator[ProgressReporter]:
    """A live progress bar on an interactive stderr, nothing otherwise (pipes, CI, --json)."""
    if not (enabled and console().is_terminal):
        yield NoProgress()
        return
    from clipcli.cli.progress_bar import RichProgress  # Rich's progress module: only when drawn

    with RichProgress(console()) as progress:
        yield progress
