"""`clipcli dupes`: parse, one call into clipcli.dupes, then the groups written out: JSON for
scripts (`[{"keeper": path, "members": [{"path", "similarity", "hash_distance"}]}]`), lines for
people, and an HTML page of thumbnails."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from clipcli.cli import options
from clipcli.cli.options import (
    HtmlOption,
    IndexOption,
    PlainJsonOption,
    output_file,
    print_error,
    print_warning,
    reports_errors,
)
from clipcli.errors import EXIT_FAILURE, UsageError
from clipcli.literal import shown

if TYPE_CHECKING:
    from clipcli.dupes import DupesReport

# As clipcli.dupes.DEFAULT_THRESHOLD, which --help must not import the machinery to show.
DEFAULT_THRESHOLD = 0.95
# Photos left out that are named one a line; past this, one line counts them.
UNREADABLE_LISTED = 10


@reports_errors
def dupes(
    index_dir: IndexOption = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            metavar="COSINE",
            help="How close two photos' vectors must be (cosine, above 0 and at most 1) to be "
            "checked as copies.",
        ),
    ] = DEFAULT_THRESHOLD,
    json_output: PlainJsonOption = False,
    html: HtmlOption = None,
    loose: Annotated[
        bool,
        typer.Option(
            "--loose",
            help="Group by the vectors alone (the same scene), without checking that the "
            "pixels are one picture.",
        ),
    ] = False,
    move_extras: Annotated[
        Path | None,
        typer.Option(
            "--move-extras",
            metavar="DIR",
            help="Move every copy but each group's keeper into DIR, under the path it had "
            "below its indexed folder, recorded in DIR/clipcli-dupes.csv.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="With --move-extras: say what would move, move nothing."),
    ] = False,
) -> None:
    """Find groups of near-duplicates (resized, re-encoded or saved-again copies of one
    picture) among the indexed photos, each with a suggested keeper. Nothing is deleted."""
    from clipcli.dupes import find_duplicates
    from clipcli.settings import index_dir as resolve_index

    html_out = output_file(html, "--html", options.HTML_SUFFIXES)
    if dry_run and move_extras is None:
        raise UsageError("--dry-run is for --move-extras", hint="add --move-extras DIR")
    report = find_duplicates(resolve_index(index_dir), threshold=threshold, loose=loose)
    if json_output:
        from clipcli.cli import render

        sys.stdout.write(render.to_json(dupes_json(report)) + "\n")
    else:
        write_dupes(report, sys.stdout)
    if html_out is not None:
        from clipcli.views.html import dupes_page

        dupes_page(report, html_out)
    _warn(report)
    if move_extras is not None:
        _move_extras(report, move_extras, dry_run, sys.stderr if json_output else sys.stdout)


def _move_extras(report: DupesReport, into: Path, dry_run: bool, out: TextIO) -> None:
    """Say what is to move, move it, and say what happened; the groups' JSON on stdout stays
    as it is, so with --json this goes to stderr."""
    from clipcli.cli.cache_view import size
    from clipcli.dupes_extras import move_extras

    copies = report.extra_copies
    verb = "would move" if dry_run else "moving"
    out.write(
        f"\n{verb} {copies} extra {'copy' if copies == 1 else 'copies'} "
        f"({size(report.extra_bytes)}) into {shown(str(into))}\n"
    )
    moved = move_extras(report, into, dry_run=dry_run)
    for item in moved.moved:
        out.write(f"  {item.action}: {shown(item.source)} -> {shown(item.destination)}\n")
    for item in moved.left:
        print_warning(f"kept {item.path} in place: {item.reason}")
    for item in moved.failed:
        print_error(f"{item.path}: cannot move ({item.reason})")
    if dry_run:
        out.write("dry run: nothing was moved\n")
    else:
        out.write(
            f"{len(moved.moved)} moved ({size(moved.bytes)}), {len(moved.left)} kept in place; "
            f"manifest: {shown(moved.manifest)}\n"
        )
        if moved.moved:
            print_warning("the index still lists the copies moved away; `clipcli index` drops them")
    if moved.failed:
        raise typer.Exit(EXIT_FAILURE)


def dupes_json(report: DupesReport) -> list[dict[str, Any]]:
    return [
        {
            "keeper": group.keeper,
            "members": [
                {"path": m.path, "similarity": m.similarity, "hash_distance": m.hash_distance}
                for m in group.members
            ],
        }
        for group in report.groups
    ]


def write_dupes(report: DupesReport, out: TextIO) -> None:
    """Each group as its keeper, then its copies with their cosine and hash distance to it;
    then one line of totals."""
    from clipcli.cli.cache_view import size

    for group in report.groups:
        out.write(f"keep   {shown(group.keeper)}\n")
        for member in group.members:
            out.write(
                f"  copy {shown(member.path)}  similarity {member.similarity:.3f}, "
                f"hash distance {member.hash_distance}\n"
            )
        out.write("\n")
    groups, copies = len(report.groups), report.extra_copies
    out.write(
        f"{groups} {'group' if groups == 1 else 'groups'}, {copies} extra "
        f"{'copy' if copies == 1 else 'copies'} taking {size(report.extra_bytes)}, among "
        f"{report.photos} {'photo' if report.photos == 1 else 'photos'}\n"
    )


def _warn(report: DupesReport) -> None:
    """What the user may not expect: hashes computed for this run only, photos left out."""
    if report.hashed_now:
        photos = "1 photo" if report.hashed_now == 1 else f"{report.hashed_now} photos"
        print_warning(
            f"{photos} had no perceptual hash stored (an index made by an older clipcli): "
            "computed for this run; `clipcli index` stores them"
        )
    if len(report.unreadable) > UNREADABLE_LISTED:
        print_warning(
            f"left out {len(report.unreadable)} photos gone or no longer readable, such as "
            f"{report.unreadable[0]}; `clipcli index` updates the index"
        )
        return
    for path in report.unreadable:
        print_warning(f"left out {path}: gone or no longer readable; `clipcli index` updates it")
