"""What every command shares: its options (their environment variables and defaults shown
in --help), and errors as one line on stderr with the documented exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from typer.core import TyperGroup

from clipcli.cli.render import Format
from clipcli.errors import EXIT_FAILURE, ClipcliError, UsageError
from clipcli.literal import shown

if TYPE_CHECKING:
    from clipcli.zeroshot.thresholds import LabelChoice


# Click's exception family, whichever Click raises them: Typer 0.28 carries a copy of its own.
ClickError: Any = next(
    base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException"
)


class OneLineErrors(TyperGroup):
    """Click's own usage errors (a missing argument, a value out of range, an unknown option)
    as one `error: ...` line on stderr, like every other clipcli error, not a usage box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except ClickError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # no command: its message is the help
                sys.stdout.write(exc.format_message() + "\n")
            else:
                print_error(*click_error(exc))
            sys.exit(exc.exit_code)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        # Without standalone mode Typer returns the code a command exited with, else its result.
        sys.exit(code if isinstance(code, int) else 0)


P = ParamSpec("P")


R = TypeVar("R")


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="open_clip model name or hf-hub:org/repo; a transformers CLIP folder or "
        "hf:org/repo. [env: CLIPCLI_MODEL; default ViT-B-32-256]",
        show_default=False,
    ),
]


PretrainedOption = Annotated[
    str | None,
    typer.Option(
        "--pretrained",
        help="Weights: an open_clip tag or a checkpoint file. [env: CLIPCLI_PRETRAINED]",
        show_default=False,
    ),
]


IndexOption = Annotated[
    Path | None,
    typer.Option(
        "--index",
        help="Index folder. [env: CLIPCLI_INDEX; default: per-user data folder]",
        show_default=False,
    ),
]


EngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        metavar="[local|ray]",
        help="local embeds here; ray embeds on a Ray cluster's workers (one model each) "
        "while this machine writes the results. Every node must see the photos at the same "
        "paths and have clipcli installed.",
        show_default=True,
    ),
]
AddressOption = Annotated[
    str | None,
    typer.Option(
        "--address",
        metavar="ADDR",
        help="With --engine ray: auto joins the cluster started on this machine by `ray "
        "start`, HOST:PORT the one whose head node is there. [default: start one here "
        "for the run]",
        show_default=False,
    ),
]
LayoutOption = Annotated[
    str | None,
    typer.Option(
        "--layout",
        metavar="NAME",
        help="auto, flat or ivfpq: how the vector index is laid out, remembered for the "
        "index. auto is exact "
        "up to 200k photos, then compressed in memory, then on disk once the vectors would "
        "fill a quarter of the memory; flat is always exact; ivfpq keeps a byte per "
        "dimension on disk, memory-mapped. [default: as before, auto at first]",
        show_default=False,
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto, cpu, cuda or mps.", show_default=True)
]


BatchOption = Annotated[
    int, typer.Option("--batch-size", min=1, help="Images per forward pass.", show_default=True)
]


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (--format json).")]


HtmlOption = Annotated[
    Path | None,
    typer.Option(
        "--html",
        help="Also write the results, with their pictures, to one self-contained HTML file.",
        show_default=False,
    ),
]


ContactSheetOption = Annotated[
    Path | None,
    typer.Option(
        "--contact-sheet",
        help="Also draw the results as a PNG grid of thumbnails with captions.",
        show_default=False,
    ),
]


FormatOption = Annotated[
    Format | None,
    typer.Option(
        "--format",
        help="How to print the results (README.md defines each). [default: table on a "
        "terminal, plain otherwise]",
        case_sensitive=False,
        show_default=False,
    ),
]


PrecisionOption = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="auto, fp32 (open_clip reference), bf16, onnx or int8. [env: CLIPCLI_PRECISION; "
        "default auto: the fastest backend that agrees with fp32]",
        show_default=False,
    ),
]

LabelsOption = Annotated[
    str | None,
    typer.Option(
        "--labels",
        help='Comma-separated labels, e.g. "cat,dog"; write \\, for a comma in a label.',
        show_default=False,
    ),
]
LabelsFileOption = Annotated[
    Path | None,
    typer.Option("--labels-file", help="A file with one label per line.", show_default=False),
]
TemplatesOption = Annotated[
    str | None,
    typer.Option(
        "--templates",
        help="Prompt templates: default, imagenet, or a file with one per line. [default: "
        "default, or those of --thresholds]",
        show_default=False,
    ),
]
MultiOption = Annotated[
    bool,
    typer.Option(
        "--multi",
        help="Give every label whose cosine clears its floor (--min-score or --thresholds), "
        "or none: the image abstains.",
    ),
]
MinScoreOption = Annotated[
    float | None,
    typer.Option(
        "--min-score",
        metavar="S",
        help="The cosine a label must reach to be given, for every label.",
        show_default=False,
    ),
]
ThresholdsOption = Annotated[
    Path | None,
    typer.Option(
        "--thresholds",
        metavar="FILE",
        help="Per-label floors calibrated by `clipcli eval --thresholds`; its labels, "
        "templates and model are used unless given (and must then be the same).",
        show_default=False,
    ),
]


def label_choice(
    labels: str | None,
    labels_file: Path | None,
    templates: str | None,
    model: str | None,
    pretrained: str | None,
    thresholds: Path | None,
    min_score: float | None,
) -> LabelChoice:
    """The labels, templates, model and floors the label options ask for together."""
    from clipcli.zeroshot.labels import parse_labels
    from clipcli.zeroshot.thresholds import choose_labels

    given = parse_labels(labels, labels_file) if labels or labels_file else None
    return choose_labels(
        given, templates, model, pretrained, thresholds=thresholds, min_score=min_score
    )


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn clipcli's own errors into one line on stderr and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if "model" in kwargs:  # a command that loads a model
            _licence_warning(kwargs["model"])
        try:
            return command(*args, **kwargs)
        except ClipcliError as exc:
            print_error(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(130) from None
        except OSError as exc:
            # What the system refused (a name too long for it, a full disk, a folder it will
            # not let us read) is the user's to fix, not a bug: the path and the reason.
            print_error(os_error_message(exc))
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper


HTML_SUFFIXES = (".html", ".htm")
PNG_SUFFIXES = (".png",)
JSON_SUFFIXES = (".json",)


def output_file(path: Path | None, option: str, suffixes: Sequence[str]) -> Path | None:
    """A file a command will write when it is done, checked before the work starts: its
    folder must exist, and its name must end as its format does."""
    if path is None:
        return None
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: the file name must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder", hint="give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: no folder {parent} to write it in")
    return path


def _licence_warning(model: object) -> None:
    """One stderr line when the model asked for (--model, else CLIPCLI_MODEL) has weights
    licensed for research only; the command goes on."""
    from clipcli.models.catalogue import licence_notice
    from clipcli.settings import ENV_MODEL

    named = model if isinstance(model, str) else os.environ.get(ENV_MODEL)
    notice = licence_notice(named or None)
    if notice is not None:
        print_warning(notice)


def os_error_message(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    reason = reason[:1].lower() + reason[1:]
    return f"{os.fsdecode(exc.filename)}: {reason}" if exc.filename is not None else reason


def print_error(message: str, hint: str | None = None) -> None:
    line = f"error: {message}" + (f"; {hint}" if hint else "")
    _to_stderr(line)


def click_error(exc: Any) -> tuple[str, str | None]:
    """Click's message as clipcli words its own: one line, lower case, the help as a hint."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    context = getattr(exc, "ctx", None)
    return message, f"see `{context.command_path} --help`" if context is not None else None


def print_warning(message: str) -> None:
    _to_stderr(f"warning: {message}")


def _to_stderr(line: str) -> None:
    """One plain line: no markup, no wrapping, whatever the terminal's width, and the
    newlines or control characters of a path escaped, so that it stays one line."""
    sys.stderr.write(shown(line) + "\n")
    sys.stderr.flush()


PlainJsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
