"""The command line: parse arguments, make one call into the logic, render the result.

Results go to stdout; progress, warnings and errors go to stderr. Exit codes: 0 success, 1 a
runtime problem (an unreadable image, weights unavailable, no index), 2 a usage problem.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clipcli import __version__
from clipcli.cli import options
from clipcli.cli.consoles import stderr, stdout
from clipcli.cli.dupes_command import dupes
from clipcli.cli.options import (
    AddressOption,
    BatchOption,
    ContactSheetOption,
    DeviceOption,
    EngineOption,
    FormatOption,
    HtmlOption,
    IndexOption,
    JsonOption,
    LabelsFileOption,
    LabelsOption,
    LayoutOption,
    MinScoreOption,
    ModelOption,
    MultiOption,
    OneLineErrors,
    PlainJsonOption,
    PrecisionOption,
    PretrainedOption,
    TemplatesOption,
    ThresholdsOption,
    output_file,
    print_error,
    print_warning,
    reports_errors,
)
from clipcli.cli.render import Format
from clipcli.cli.serve_command import serve
from clipcli.cli.shards_command import embed, export, import_command
from clipcli.cli.sort_command import sort
from clipcli.errors import EXIT_FAILURE, UsageError

DEFAULT_TOP_K = 5

if TYPE_CHECKING:
    from clipcli.classify import Classification
    from clipcli.search import SearchHit


app = typer.Typer(
    name="clipcli",
    cls=OneLineErrors,
    help="Zero-shot image classification and photo search with CLIP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's own help layout: Rich's would read every help text as markup, and lose the
    # "[env: CLIPCLI_MODEL; ...]" of the options that have one.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"clipcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Zero-shot image classification and photo search with CLIP."""


@app.command()
@reports_errors
def classify(
    paths: Annotated[
        list[Path], typer.Argument(help="Image files or folders (searched recursively).")
    ],
    labels: LabelsOption = None,
    labels_file: LabelsFileOption = None,
    templates: TemplatesOption = None,
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            min=1,
            help="Labels to show per image. [default: 5; with --multi, every label given]",
            show_default=False,
        ),
    ] = None,
    multi: MultiOption = False,
    min_score: MinScoreOption = None,
    thresholds: ThresholdsOption = None,
    form: FormatOption = None,
    json_output: JsonOption = False,
    model: ModelOption = None,
    pretrained: PretrainedOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    batch_size: BatchOption = 32,
    html: HtmlOption = None,
    contact_sheet: ContactSheetOption = None,
) -> None:
    """Rank labels for each image by CLIP zero-shot similarity; with --multi, give every
    label that clears its floor, or none."""
    from clipcli.classify import classify_paths, failed, label_warnings, multi_labelled
    from clipcli.cli import render

    chosen = render.choose_format(form, json_output, sys.stdout)
    html_out = output_file(html, "--html", options.HTML_SUFFIXES)
    sheet_out = output_file(contact_sheet, "--contact-sheet", options.PNG_SUFFIXES)
    if (min_score is not None or thresholds is not None) and not multi:
        option = "--min-score" if min_score is not None else "--thresholds"
        raise UsageError(f"{option} sets the floor of --multi", hint="add --multi")
    choice = options.label_choice(
        labels, labels_file, templates, model, pretrained, thresholds, min_score
    )
    if multi and choice.floors is None:
        raise UsageError(
            "--multi gives the labels that clear a floor",
            hint="add --min-score S or --thresholds FILE",
        )
    with render.progress_for(stderr, enabled=chosen is not Format.json) as progress:
        results = classify_paths(
            paths,
            choice.labels,
            choice.templates,
            model=choice.model,
            pretrained=choice.pretrained,
            device=device,
            precision=precision,
            batch_size=batch_size,
            top_k=None if multi else top_k or DEFAULT_TOP_K,
            progress=progress,
        )
    if choice.floors is not None:
        results = multi_labelled(results, choice.floors, top_k)
    label_list = choice.labels
    render.write_classifications(chosen, results, sys.stdout, stdout)
    _write_classify_views(results, html_out, sheet_out)
    for result in results:
        if result.error is not None:
            print_error(f"{result.path}: {result.error}")
        elif result.warning is not None:
            print_warning(f"{result.path}: {result.warning}")
    for note in [] if multi else label_warnings(label_list):
        print_warning(note)
    if failed(results):  # an unreadable image, or a folder that gave nothing to classify
        raise typer.Exit(EXIT_FAILURE)


def _write_classify_views(
    results: list[Classification], html: Path | None, sheet: Path | None
) -> None:
    if html is not None:
        from clipcli.views.html import classify_page

        classify_page(results, html)
    if sheet is not None:
        from clipcli.views.contact_sheet import classify_tiles, write_contact_sheet

        tiles = classify_tiles(results)
        if tiles:
            write_contact_sheet(tiles, sheet)
        else:
            print_warning(f"{sheet}: not written, since there is no image to show")


@app.command()
@reports_errors
def index(
    folders: Annotated[
        list[Path] | None, typer.Argument(help="Folders of photos to index.", show_default=False)
    ] = None,
    index_dir: IndexOption = None,
    model: ModelOption = None,
    pretrained: PretrainedOption = None,
    json_output: JsonOption = False,
    batch_size: BatchOption = 32,
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Forget the whole index (every folder in it), then embed the folders given "
            "(e.g. with a new model).",
        ),
    ] = False,
    hidden: Annotated[
        bool, typer.Option("--hidden", help="Also index hidden files and folders.")
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="If the catalog is damaged, keep what it still holds in a new one (the "
            "damaged file is kept next to it), then embed the photos it lost again.",
        ),
    ] = False,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            metavar="GLOB",
            help="Leave out files and folders matching a gitignore-style pattern (repeatable); "
            "remembered for the folders given, until other patterns are given.",
            show_default=False,
        ),
    ] = None,
    forget: Annotated[
        list[Path] | None,
        typer.Option(
            "--forget",
            metavar="DIR",
            help="Drop a folder and its photos from the index, without reading it (repeatable).",
            show_default=False,
        ),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Drop the photos whose files are gone, without scanning for new ones.",
        ),
    ] = False,
    engine: EngineOption = "local",
    address: AddressOption = None,
    layout: LayoutOption = None,
) -> None:
    """Add the photos under FOLDERS to the index; re-runs only embed what changed."""
    from clipcli.cli import render
    from clipcli.index import update_index
    from clipcli.settings import index_dir as resolve_index

    if repair and reset:
        raise UsageError(
            "--reset forgets the whole index, --repair keeps it", hint="give one of them"
        )
    if not (folders or forget or prune or layout):
        raise UsageError(
            "no folders to index", hint="give one or more, or --forget DIR, --prune or --layout"
        )
    with render.progress_for(stderr, enabled=not json_output) as progress:
        report = update_index(
            folders or [],
            resolve_index(index_dir),
            excludes=exclude,
            forget=forget or [],
            prune=prune,
            model=model,
            pretrained=pretrained,
            device=device,
            precision=precision,
            batch_size=batch_size,
            include_hidden=hidden,
            reset=reset,
            repair=repair,
            progress=progress,
            engine=engine,
            address=address,
            layout=layout,
            # At once, with --json too: where the damaged file went is news even if the run
            # then fails.
            on_repair=lambda repair: print_warning(render.repair_warning(repair)),
        )
    if json_output:
        sys.stdout.write(render.to_json(render.index_report_json(report)) + "\n")
    else:
        render.write_index_report(report, sys.stdout, stdout)
        for skipped in report.skipped:
            print_warning(f"skipped {skipped.path}: {skipped.reason}")
    for root in report.unreachable:  # with --json too: photos kept that the user may not expect
        print_warning(
            f"{root}: not reachable; its photos are kept (`clipcli index --forget {root}` "
            "drops them)"
        )


@app.command()
@reports_errors
def search(
    query: Annotated[
        str | None,
        typer.Argument(
            help='What to look for, in words; terms may be added and subtracted: "beach + '
            'sunset - people", "2*dog + snow".'
        ),
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", help="Search by an example image (or as well); may be repeated."),
    ] = None,
    not_image: Annotated[
        list[Path] | None,
        typer.Option("--not-image", help="Move away from photos like this one; may be repeated."),
    ] = None,
    literal: Annotated[
        bool,
        typer.Option("--literal", help="Take the query as one phrase: no + and - terms."),
    ] = False,
    index_dir: IndexOption = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Number of results.")] = 10,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score",
            help="Leave out hits whose score (the cosine) is below this; --top-k stays the cap.",
            show_default=False,
        ),
    ] = None,
    under: Annotated[
        list[Path] | None,
        typer.Option(
            "--under",
            metavar="DIR",
            help="Only photos below this folder (repeatable: below any of them).",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DATE",
            help="Only photos taken on or after DATE (YYYY-MM-DD, or YYYY-MM-DDTHH:MM): the "
            "EXIF date, else the file's modification time.",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="DATE",
            help="Only photos taken on or before DATE (a whole day when no time is given).",
            show_default=False,
        ),
    ] = None,
    ext: Annotated[
        str | None,
        typer.Option("--ext", help="Only these file types, e.g. jpg,heic.", show_default=False),
    ] = None,
    form: FormatOption = None,
    json_output: JsonOption = False,
    paths_only: Annotated[
        bool, typer.Option("--paths-only", help="Print only the paths, one per line.")
    ] = False,
    null: Annotated[
        bool,
        typer.Option(
            "--null", "-0", help="Only the paths, each ended by a NUL byte (for xargs -0)."
        ),
    ] = False,
    device: DeviceOption = "auto",
    moved_to: Annotated[
        str | None,
        typer.Option(
            "--pretrained",
            help="Where the index's checkpoint file (or transformers folder) is now, if it "
            "moved since indexing (it must hold the same weights).",
            show_default=False,
        ),
    ] = None,
    html: HtmlOption = None,
    contact_sheet: ContactSheetOption = None,
    rerank: Annotated[
        int,
        typer.Option(
            "--rerank",
            metavar="N",
            min=0,
            help="With an on-disk index (--layout ivfpq): score its N best candidates again "
            "on their exact vectors; 0 ranks by the compressed codes alone. Other layouts are "
            "exact already.",
        ),
    ] = 100,
    preview: Annotated[
        bool,
        typer.Option(
            "--preview",
            help="Show the hits' thumbnails in the terminal, where it speaks an image protocol "
            "(kitty, iTerm2, sixel).",
        ),
    ] = False,
) -> None:
    """Find the indexed photos closest to a text query or an example image."""
    from clipcli.cli import render
    from clipcli.query import parse_filters
    from clipcli.search import search_index
    from clipcli.settings import index_dir as resolve_index

    filters = parse_filters(under or (), since, until, ext)
    if (paths_only or null) and (form is not None or json_output):
        raise UsageError(
            f"{'-0' if null else '--paths-only'} prints the paths alone",
            hint="leave out --format and --json",
        )
    if preview and (paths_only or null or form is not None or json_output):
        raise UsageError(
            "--preview draws the hits for people", hint="leave out --format, --json and the paths"
        )
    chosen = render.choose_format(form, json_output, sys.stdout)
    html_out = output_file(html, "--html", options.HTML_SUFFIXES)
    sheet_out = output_file(contact_sheet, "--contact-sheet", options.PNG_SUFFIXES)
    found = search_index(
        resolve_index(index_dir),
        query,
        images=image or (),
        not_images=not_image or (),
        literal=literal,
        top_k=top_k,
        min_score=min_score,
        filters=filters,
        device=device,
        pretrained=moved_to,
        rerank=rerank,
    )
    if paths_only or null:
        render.write_paths(found.hits, sys.stdout, null=null)
    elif not (preview and _previewed(found.hits)):
        render.write_search(chosen, found.hits, sys.stdout, stdout)
    if html_out is not None:
        from clipcli.views.html import search_page

        search_page(
            found.hits, html_out, query=query, images=image or (), not_images=not_image or ()
        )
    if sheet_out is not None and found.hits:
        from clipcli.views.contact_sheet import search_tiles, write_contact_sheet

        write_contact_sheet(search_tiles(found.hits), sheet_out)
    if not found.hits:  # a score floor or filters left nothing
        why = "passes the filters" if filters.any else f"scores {min_score} or more"
        if filters.any and min_score is not None:
            why = f"passes the filters and scores {min_score} or more"
        print_warning(
            f"no photo {why}" + (f"; {sheet_out} not written" if sheet_out is not None else "")
        )
    if found.missing == 1:
        print_warning("1 indexed photo no longer exists; run `clipcli index` to drop it")
    elif found.missing:
        print_warning(
            f"{found.missing} indexed photos no longer exist; run `clipcli index` to drop them"
        )


@app.command("eval")
@reports_errors
def evaluate(
    dataset: Annotated[
        Path, typer.Argument(help="A folder with one subfolder of images per class.")
    ],
    classnames: Annotated[
        Path | None,
        typer.Option(
            "--classnames",
            help="Label texts: lines `folder<TAB>label`, or one label per line in sorted "
            "folder order. [default: folder names, _ and - read as spaces]",
            show_default=False,
        ),
    ] = None,
    templates: Annotated[
        list[str] | None,
        typer.Option(
            "--templates",
            help="Prompt templates: default, imagenet, or a file; repeat to compare sets.",
            show_default=False,
        ),
    ] = None,
    top_k: Annotated[
        int, typer.Option("--top-k", min=1, help="The k of top-k accuracy (acc5).")
    ] = 5,
    model: ModelOption = None,
    pretrained: PretrainedOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    batch_size: BatchOption = 32,
    json_output: PlainJsonOption = False,
    html: HtmlOption = None,
    confusion: Annotated[
        Path | None,
        typer.Option(
            "--confusion",
            help="Also draw the best template set's confusion matrix to a PNG file.",
            show_default=False,
        ),
    ] = None,
    thresholds: Annotated[
        Path | None,
        typer.Option(
            "--thresholds",
            metavar="OUT.json",
            help="Also calibrate a threshold per label (the lowest cosine at which it reaches "
            "--precision-target), from the best template set, and write them for "
            "`classify --multi --thresholds` and `sort --thresholds`.",
            show_default=False,
        ),
    ] = None,
    precision_target: Annotated[
        float | None,
        typer.Option(
            "--precision-target",
            help="The precision each label's threshold must reach. [default: 0.9]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Score zero-shot classification on labelled photos: acc1, acc5, mean per-class recall."""
    from clipcli.cli import render
    from clipcli.evaluate import evaluate_dataset
    from clipcli.zeroshot.templates import load_templates
    from clipcli.zeroshot.thresholds import DEFAULT_PRECISION_TARGET, write_thresholds

    names = list(dict.fromkeys(templates or ["default"]))
    template_sets = [(name, load_templates(name)) for name in names]
    html_out = output_file(html, "--html", options.HTML_SUFFIXES)
    png_out = output_file(confusion, "--confusion", options.PNG_SUFFIXES)
    thresholds_out = output_file(thresholds, "--thresholds", options.JSON_SUFFIXES)
    if precision_target is not None and thresholds_out is None:
        raise UsageError(
            "--precision-target sets the thresholds' precision", hint="add --thresholds OUT.json"
        )
    if thresholds_out is not None and precision_target is None:
        precision_target = DEFAULT_PRECISION_TARGET
    with render.progress_for(stderr, enabled=not json_output) as progress:
        report = evaluate_dataset(
            dataset,
            template_sets,
            classnames=classnames,
            top_k=top_k,
            model=model,
            pretrained=pretrained,
            device=device,
            precision=precision,
            batch_size=batch_size,
            progress=progress,
            precision_target=precision_target,
        )
    if thresholds_out is not None and report.thresholds is not None:
        write_thresholds(thresholds_out, report.thresholds)
    for folder in report.empty_classes:
        print_warning(f"{dataset / folder}: no images; not a class")
    for skipped in report.skipped:
        print_warning(f"skipped {skipped.path}: {skipped.reason}")
    if json_output:
        sys.stdout.write(render.to_json(render.eval_json(report)) + "\n")
    else:
        render.write_eval(report, stdout)
    if report.thresholds is not None:
        if not json_output:
            render.write_thresholds(report.thresholds, thresholds_out, stdout)
        for label in report.thresholds.unreachable():
            print_warning(
                f"{label}: no threshold reaches precision {report.thresholds.precision_target}"
                "; never given with these thresholds"
            )
    if html_out is not None:
        from clipcli.views.html import eval_page

        eval_page(report, html_out)
    if png_out is not None:
        from clipcli.views.confusion import write_confusion_png

        best = report.best_first()[0]
        write_confusion_png(
            report.labels, best.confusion, png_out, title=f"{report.model}, {best.templates}"
        )


app.command()(sort)
app.command()(dupes)
app.command()(serve)
app.command()(export)
app.command("import")(import_command)
app.command()(embed)


def _previewed(hits: list[SearchHit]) -> bool:
    """Draw the hits' thumbnails inline, if this terminal can show them; else say so once."""
    from clipcli.views.preview import image_protocol, write_previews

    protocol = image_protocol(sys.stdout)
    if protocol is None:
        print_warning(
            "--preview: this terminal shows no images (it speaks neither kitty's image "
            "protocol nor sixel); the table follows"
        )
        return False
    write_previews(hits, stdout(), protocol=protocol)
    return True


@app.command()
@reports_errors
def info(index_dir: IndexOption = None, json_output: PlainJsonOption = False) -> None:
    """Describe an index: its model, photos and roots, sizes, layout and last update."""
    from clipcli.cli import index_view, render
    from clipcli.info import index_info
    from clipcli.settings import index_dir as resolve_index

    found = index_info(resolve_index(index_dir))
    if json_output:
        sys.stdout.write(render.to_json(index_view.info_json(found)) + "\n")
    else:
        index_view.write_info(found, sys.stdout)


@app.command()
@reports_errors
def roots(
    index_dir: IndexOption = None,
    move: Annotated[
        tuple[Path, Path] | None,
        typer.Option(
            "--move",
            metavar="OLD NEW",
            help="The photos of root OLD are now under NEW (a drive mounted elsewhere): "
            "re-point them, keeping their vectors.",
            show_default=False,
        ),
    ] = None,
    json_output: PlainJsonOption = False,
) -> None:
    """List the folders an index was built from, their photos, and whether they are there."""
    from clipcli.cli import index_view, render
    from clipcli.info import list_roots
    from clipcli.roots import move_root
    from clipcli.settings import index_dir as resolve_index

    folder = resolve_index(index_dir)
    if move is not None:
        moved = move_root(folder, *move)
        if json_output:
            sys.stdout.write(render.to_json(index_view.move_json(moved)) + "\n")
        else:
            index_view.write_move(moved, sys.stdout)
        return
    found = list_roots(folder)
    if json_output:
        sys.stdout.write(render.to_json(index_view.roots_json(found)) + "\n")
    else:
        index_view.write_roots(found, sys.stdout)


@app.command()
@reports_errors
def models(json_output: PlainJsonOption = False) -> None:
    """List the models clipcli knows by name: accuracy, cost, licence, and whether each is
    cached here. Tiers fast, default and best work as --model."""
    from clipcli.cli import models_view, render
    from clipcli.models.catalogue import CATALOGUE

    if json_output:
        sys.stdout.write(render.to_json(models_view.models_json(CATALOGUE)) + "\n")
    else:
        models_view.write_models(CATALOGUE, sys.stdout)


cache_app = typer.Typer(context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(cache_app, name="cache")


@cache_app.callback(invoke_without_command=True)
@reports_errors
def cache(ctx: typer.Context, json_output: PlainJsonOption = False) -> None:
    """Show the exported models and cached text embeddings: their size, when each export was
    last used, and which known index uses them. `clipcli cache clean` removes what no index
    needs. [env: CLIPCLI_CACHE; default: per-user cache folder. CLIPCLI_CACHE_LIMIT caps the
    exports; default 10GB]"""
    if ctx.invoked_subcommand is not None:
        return
    from clipcli.cache import cache_report
    from clipcli.cli import cache_view, render

    report = cache_report()
    if json_output:
        sys.stdout.write(render.to_json(cache_view.cache_json(report)) + "\n")
    else:
        cache_view.write_cache(report, sys.stdout)


@cache_app.command("clean")
@reports_errors
def cache_clean(
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            metavar="DAYS",
            min=0,
            help="Also remove the exports of indexed models not used for DAYS days.",
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Remove every export and cached text embedding.")
    ] = False,
    json_output: PlainJsonOption = False,
) -> None:
    """Remove the exports and cached text embeddings of models no known index uses."""
    from clipcli.cache import clean
    from clipcli.cli import cache_view, render

    if everything and older_than is not None:
        raise UsageError("--all removes everything", hint="leave out --older-than")
    report = clean(older_than_days=older_than, everything=everything)
    if json_output:
        sys.stdout.write(render.to_json(cache_view.clean_json(report)) + "\n")
    else:
        cache_view.write_clean(report, sys.stdout)
    for skipped in report.skipped:
        print_warning(f"kept {skipped.path}: {skipped.reason}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="clipcli")


if __name__ == "__main__":
    sys.exit(main())
