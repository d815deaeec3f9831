"""`clipcli export`, `clipcli import` and `clipcli embed`: shards in clip-retrieval's layout,
out of an index, into one, and straight from folders. Parse, one call into the command module,
then a summary line (or --json's object) on stdout and what was left out on stderr."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from clipcli.cli.consoles import stderr
from clipcli.cli.options import (
    AddressOption,
    BatchOption,
    DeviceOption,
    EngineOption,
    IndexOption,
    LayoutOption,
    ModelOption,
    PlainJsonOption,
    PrecisionOption,
    PretrainedOption,
    print_warning,
    reports_errors,
)
from clipcli.literal import shown

# As clipcli.shards.layout.DEFAULT_SHARD_SIZE, which --help must not import the machinery to show.
DEFAULT_SHARD_SIZE = 1_000_000
# Rows left out that are named one a line; past this, one line counts them.
SKIPPED_LISTED = 20

ShardSizeOption = Annotated[
    int,
    typer.Option(
        "--shard-size",
        min=1,
        metavar="ROWS",
        help="Rows per shard (one img_emb_N.npy and one metadata_N.parquet each).",
    ),
]


@reports_errors
def export(
    out: Annotated[
        Path,
        typer.Argument(
            metavar="OUT",
            help="The folder to write (new or empty): img_emb/, metadata/ and the manifest "
            "clipcli-shards.json.",
            show_default=False,
        ),
    ],
    index_dir: IndexOption = None,
    shard_size: ShardSizeOption = DEFAULT_SHARD_SIZE,
    json_output: PlainJsonOption = False,
) -> None:
    """Write the index's vectors and photos as shards in clip-retrieval's layout (float16
    npy and parquet), which embedding-reader and autofaiss read."""
    from clipcli.cli import render
    from clipcli.export import export_shards
    from clipcli.settings import index_dir as resolve_index

    with render.progress_for(stderr, enabled=not json_output) as progress:
        report = export_shards(
            resolve_index(index_dir), out, shard_size=shard_size, progress=progress
        )
    _write(
        json_output,
        {k: v for k, v in asdict(report).items() if k not in ("skipped", "seconds")},
        f"{_count(report.rows, 'photo')} in {_count(report.shards, 'shard')} "
        f"({report.dim}-d, {shown(report.model)}): {shown(report.out)}",
    )
    _warn_skipped(report.skipped)


@reports_errors
def import_command(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="SHARDS",
            help="A folder of shards: clipcli's (export, embed) or clip-retrieval's.",
            show_default=False,
        ),
    ],
    index_dir: IndexOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="The model that made the shards: needed for those without clipcli's manifest, "
            "checked against it for the others.",
            show_default=False,
        ),
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            "--pretrained",
            help="Its weights: an open_clip tag or a checkpoint file.",
            show_default=False,
        ),
    ] = None,
    layout: LayoutOption = None,
    json_output: PlainJsonOption = False,
) -> None:
    """Build a new index from shards; those without clipcli's manifest (clip-retrieval's)
    need --model. A later `clipcli index DIR` embeds none of the photos again."""
    from clipcli.cli import render
    from clipcli.import_shards import import_shards
    from clipcli.settings import index_dir as resolve_index

    with render.progress_for(stderr, enabled=not json_output) as progress:
        report = import_shards(
            source,
            resolve_index(index_dir),
            model=model,
            pretrained=pretrained,
            layout=layout,
            progress=progress,
        )
    data = asdict(report)
    _write(
        json_output,
        data,
        f"{_count(report.added, 'photo')} imported into {shown(report.index)} "
        f"({shown(report.model)}), {len(report.skipped)} skipped, "
        f"{_count(report.duplicates, 'duplicate')} left out",
    )
    if report.duplicates:
        print_warning(
            f"{_count(report.duplicates, 'row')} named a photo a later row names too: the "
            "last row of each was kept"
        )
    _warn_skipped(report.skipped)


@reports_errors
def embed(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="DIR... OUT",
            help="Folders of images (searched recursively), then the folder of shards to write: "
            "new or empty, or one this model began (a re-run resumes it).",
            show_default=False,
        ),
    ],
    engine: EngineOption = "local",
    address: AddressOption = None,
    shard_size: ShardSizeOption = DEFAULT_SHARD_SIZE,
    batch_size: BatchOption = 32,
    model: ModelOption = None,
    pretrained: PretrainedOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    json_output: PlainJsonOption = False,
) -> None:
    """Embed folders of images straight into shards in clip-retrieval's layout, with no
    catalog: for collections too large for one index."""
    from clipcli.cli import render
    from clipcli.embed import EmbedJob, embed_folders
    from clipcli.errors import UsageError

    if len(paths) < 2:
        raise UsageError("give one or more folders of images, then OUT")
    *folders, out = paths
    job = EmbedJob(
        engine=engine,
        address=address,
        shard_size=shard_size,
        batch_size=batch_size,
        model=model,
        pretrained=pretrained,
        device=device,
        precision=precision,
    )
    with render.progress_for(stderr, enabled=not json_output) as progress:
        report = embed_folders(folders, out, job, progress)
    _write(
        json_output,
        asdict(report),
        f"{report.embedded} embedded, {report.kept} already in the shards, "
        f"{len(report.skipped)} skipped: {_count(report.rows, 'row')} in "
        f"{_count(report.shards, 'shard')} ({report.dim}-d, {shown(report.model)}) in "
        f"{shown(report.out)}",
    )
    _warn_skipped(report.skipped)


def _write(json_output: bool, data: dict[str, Any], line: str) -> None:
    if json_output:
        from clipcli.cli import render

        sys.stdout.write(render.to_json(data) + "\n")
    else:
        sys.stdout.write(line + "\n")


def _warn_skipped(skipped: list[Any]) -> None:
    for item in skipped[:SKIPPED_LISTED]:
        print_warning(f"skipped {item.path}: {item.reason}")
    if len(skipped) > SKIPPED_LISTED:
        print_warning(f"and {len(skipped) - SKIPPED_LISTED} more skipped (see --json)")


def _count(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
