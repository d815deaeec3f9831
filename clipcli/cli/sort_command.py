"""`clipcli sort`: parse, one call into clipcli.sort, render."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from clipcli.cli.consoles import stderr
from clipcli.cli.options import (
    BatchOption,
    DeviceOption,
    LabelsFileOption,
    LabelsOption,
    ModelOption,
    PlainJsonOption,
    PrecisionOption,
    PretrainedOption,
    TemplatesOption,
    ThresholdsOption,
    label_choice,
    print_error,
    print_warning,
    reports_errors,
)
from clipcli.errors import EXIT_FAILURE


@reports_errors
def sort(
    sources: Annotated[
        list[Path],
        typer.Argument(
            metavar="SRC...",
            help="Image files or folders (searched recursively).",
            show_default=False,
        ),
    ],
    into: Annotated[
        Path,
        typer.Option(
            "--into",
            metavar="DEST",
            help="The folder to sort into: one folder per label, _unsorted for images that "
            "clear no floor, and the manifest clipcli-sort.csv. Files already in it are not "
            "sorted again, even where it lies inside a SRC.",
            show_default=False,
        ),
    ],
    labels: LabelsOption = None,
    labels_file: LabelsFileOption = None,
    templates: TemplatesOption = None,
    thresholds: ThresholdsOption = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score",
            metavar="S",
            help="One floor for every label: an image whose best label's cosine is below it "
            "goes to _unsorted.",
            show_default=False,
        ),
    ] = None,
    multi: Annotated[
        bool,
        typer.Option(
            "--multi",
            help="Put each image into the folder of every label that clears its floor (needs "
            "--min-score or --thresholds).",
        ),
    ] = False,
    move: Annotated[
        bool,
        typer.Option(
            "--move",
            help="Move the images instead of copying them (with --multi: copy into "
            "all but one folder, move into the last).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print what would go where, and change nothing."),
    ] = False,
    model: ModelOption = None,
    pretrained: PretrainedOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    batch_size: BatchOption = 32,
    json_output: PlainJsonOption = False,
) -> None:
    """Copy (or move) each image into a folder named for its best label, never overwriting;
    a re-run does only what is missing."""
    from clipcli.cli import render, sort_view
    from clipcli.sort import sort_images

    choice = label_choice(labels, labels_file, templates, model, pretrained, thresholds, min_score)
    with render.progress_for(stderr, enabled=not json_output) as progress:
        report = sort_images(
            sources,
            into,
            choice,
            multi=multi,
            move=move,
            dry_run=dry_run,
            device=device,
            precision=precision,
            batch_size=batch_size,
            progress=progress,
        )
    if json_output:
        sys.stdout.write(render.to_json(sort_view.sort_json(report)) + "\n")
    else:
        sort_view.write_sort(report, sys.stdout)
    for note in report.notes:
        print_warning(note)
    for error in report.errors:
        print_error(f"{error.path}: {error.error}")
    if report.errors:  # unreadable images stay where they are
        raise typer.Exit(EXIT_FAILURE)
