"""`clipcli sort`: classify images and file each into the folder of its label.

Each image is copied (or, asked for, moved) into `DEST/<label>/`, or into `DEST/_unsorted/`
when its best label does not clear the floor; with `multi`, into the folder of every label
that clears it. Nothing is ever overwritten, a kill at any moment leaves every file whole in
at least one place (in exactly one, for a move on one filesystem), and a run repeated does
only what the last one left undone. `DEST/clipcli-sort.csv` records what went where.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clipcli.classify import Classification, classify_paths
from clipcli.errors import ClipcliError, UsageError
from clipcli.filing.folder_names import folder_names
from clipcli.filing.manifest import Manifest, read_rows
from clipcli.filing.transfer import Filer, Landing, remove_stale_parts
from clipcli.locks import Busy, exclusive
from clipcli.media.discover import expand_paths
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.store import root_upkeep
from clipcli.zeroshot.floors import Floors, best_cleared, cleared
from clipcli.zeroshot.scorer import Prediction
from clipcli.zeroshot.thresholds import LabelChoice

UNSORTED = "_unsorted"
MANIFEST_NAME = "clipcli-sort.csv"
MANIFEST_COLUMNS = ("source", "destination", "label", "score")
LOCK_NAME = ".clipcli-sort.lock"
TRANSFER_TAG = "sort"
# Cosines differ in the third decimal between labels that matter; four keep that readable.
SCORE_DIGITS = 4

# What became of one image in one folder.
COPIED, MOVED, ALREADY_THERE, SOURCE_REMOVED = "copied", "moved", "already there", "source removed"
WOULD_COPY, WOULD_MOVE, WOULD_REMOVE = "would copy", "would move", "would remove source"
FAILED = "failed"
_WRITTEN = frozenset({COPIED, MOVED, WOULD_COPY, WOULD_MOVE})


@dataclass(frozen=True)
class FiledFile:
    """One image in one destination folder (an image given several labels has several), or
    an image that could not be read (`action` "failed", no destination)."""

    source: str
    destination: str | None
    label: str | None  # None: in _unsorted (or failed)
    score: float | None  # the label's cosine; in _unsorted the best cosine; None: failed
    action: str


@dataclass(frozen=True)
class FailedFile:
    path: str
    error: str


@dataclass(frozen=True)
class SortReport:
    """What a sort did (or, in a dry run, would do), file by file."""

    into: str
    manifest: str
    dry_run: bool
    moved: bool
    folders: dict[str, str]  # label -> its folder's name under `into`
    files: list[FiledFile]
    errors: list[FailedFile]
    notes: list[str]  # source paths that gave nothing to sort, and why

    @property
    def images(self) -> int:
        return len({filed.source for filed in self.files})

    @property
    def placed(self) -> int:
        """Files written into a label's folder (or that would be)."""
        return sum(f.action in _WRITTEN and f.label is not None for f in self.files)

    @property
    def unsorted(self) -> int:
        """Files written into _unsorted (or that would be)."""
        return sum(f.action in _WRITTEN and f.label is None for f in self.files)

    @property
    def already_there(self) -> int:
        """Files whose identical copy was at their destination already."""
        return sum(f.action in (ALREADY_THERE, SOURCE_REMOVED, WOULD_REMOVE) for f in self.files)

    @property
    def failed(self) -> int:
        return len(self.errors)


@dataclass(frozen=True)
class _Target:
    label: str | None  # None: _unsorted
    folder: str
    score: float


def sort_images(
    sources: Sequence[Path],
    into: Path,
    choice: LabelChoice,
    *,
    multi: bool = False,
    move: bool = False,
    dry_run: bool = False,
    device: str = "auto",
    precision: str | None = None,
    batch_size: int = 32,
    progress: ProgressReporter | None = None,
) -> SortReport:
    """Classify the images of `sources` (files, and folders searched recursively; nothing
    under `into`) and file each into its label's folder under `into`.

    With `multi`, an image goes into every folder whose label clears its floor; without, into
    its best label's, if that clears the floor (always, with no floors). An image that
    clears none goes to `_unsorted`. With `dry_run` nothing on disk changes, not even `into`.
    Raises UsageError for `multi` without floors or an `into` that is a file.
    """
    if multi and choice.floors is None:
        raise UsageError(_NEEDS_A_FLOOR, hint="give --min-score S or --thresholds FILE")
    into = Path(os.path.abspath(into))
    if os.path.exists(into) and not os.path.isdir(into):
        raise UsageError(f"--into {into}: not a folder")
    if not dry_run:
        _check_not_busy(into)
    progress = progress or NoProgress()
    files, notes = _gathered(sources, into)
    folders = folder_names(choice.labels, reserved=(UNSORTED, MANIFEST_NAME))
    results = classify_paths(
        files,
        choice.labels,
        choice.templates,
        model=choice.model,
        pretrained=choice.pretrained,
        device=device,
        precision=precision,
        batch_size=batch_size,
        progress=progress,
    )
    filing = _Filing(into, folders, choice.floors, multi=multi, move=move, dry_run=dry_run)
    with filing.ready():
        progress.phase("Planning" if dry_run else "Moving" if move else "Copying", len(results))
        for result in results:
            filing.file(result)
            progress.advance(1)
    return SortReport(
        str(into),
        str(into / MANIFEST_NAME),
        dry_run,
        move,
        folders,
        filing.filed,
        filing.errors,
        notes,
    )


_NEEDS_A_FLOOR = "--multi files an image under every label that clears a floor"


def _check_not_busy(into: Path) -> None:
    """Refuse at once, before the images are classified, a DEST that another sort holds;
    the lock is taken for good once there is something to file."""
    if (into / LOCK_NAME).exists():
        with _held(into):
            pass


@contextmanager
def _held(into: Path) -> Iterator[None]:
    try:
        with exclusive(into / LOCK_NAME, wait=False):
            yield
    except Busy:
        raise ClipcliError(
            f"{into}: another clipcli sort is filing into it", hint="wait for it to finish"
        ) from None


def _gathered(sources: Sequence[Path], into: Path) -> tuple[list[Path], list[str]]:
    """The image files to sort, each once, none under `into` (its files are the sorted ones,
    however it lies inside a source); and a note for each source that gave none."""
    files: list[Path] = []
    notes: list[str] = []
    seen: set[str] = set()
    inside = os.path.realpath(into)
    for source in sources:
        found = expand_paths([source])
        kept = [path for path in found if not _is_within(os.path.realpath(path), inside)]
        if found and not kept:
            notes.append(f"{source}: inside --into {into}; not sorted again")
        elif not kept and os.path.isdir(source):
            notes.append(f"{source}: no images found")
        for path in kept:
            key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files, notes


def _is_within(path: str, folder: str) -> bool:
    return path == folder or root_upkeep.is_under(path, [folder])


class _Filing:
    """The filing of classified images into `into`, one after another, each recorded in the
    manifest as it lands."""

    def __init__(
        self,
        into: Path,
        folders: dict[str, str],
        floors: Floors | None,
        *,
        multi: bool,
        move: bool,
        dry_run: bool,
    ) -> None:
        self.into = into
        self.folders = folders
        self.floors = floors
        self.multi = multi
        self.move = move
        self.dry_run = dry_run
        self.filer = Filer(TRANSFER_TAG, dry_run=dry_run)
        self.filed: list[FiledFile] = []
        self.errors: list[FailedFile] = []
        self._manifest: Manifest | None = None
        self._recorded: set[tuple[str, str]] = set()

    @contextmanager
    def ready(self) -> Iterator[None]:
        """Hold `into` for this run alone, with an earlier run's leftovers cleared and the
        manifest open; in a dry run, touch nothing."""
        if self.dry_run:
            yield
            return
        with _held(self.into):
            remove_stale_parts(self.into, TRANSFER_TAG)
            manifest = self.into / MANIFEST_NAME
            rows = read_rows(manifest, MANIFEST_COLUMNS)
            self._recorded = {(row["source"], row["destination"]) for row in rows}
            with Manifest(manifest, MANIFEST_COLUMNS) as self._manifest:
                yield

    def file(self, result: Classification) -> None:
        """File one image into each of its folders: copies into all but the last, then with
        `move` a move into the last, so that the source goes only once every copy is made."""
        source = Path(os.path.abspath(result.path))
        if result.predictions is None:
            self._failed(source, result.error or "not classified")
            return
        targets = self._targets(result.predictions)
        for index, target in enumerate(targets):
            moving = self.move and index == len(targets) - 1
            folder = self.into / target.folder
            try:
                landing = (self.filer.move if moving else self.filer.copy)(source, folder)
            except OSError as exc:
                self._failed(source, _os_reason(exc, source))
                return
            self._landed(source, target, landing, moving=moving)

    def _targets(self, predictions: list[Prediction]) -> list[_Target]:
        if self.multi and self.floors is not None:
            chosen = cleared(predictions, self.floors)
        else:
            best = best_cleared(predictions, self.floors)
            chosen = [] if best is None else [best]
        if not chosen:
            best_cosine = max(prediction.similarity for prediction in predictions)
            return [_Target(None, UNSORTED, best_cosine)]
        return [_Target(p.label, self.folders[p.label], p.similarity) for p in chosen]

    def _landed(self, source: Path, target: _Target, landing: Landing, *, moving: bool) -> None:
        action = _action(landing, moving=moving, dry_run=self.dry_run)
        score = round(target.score, SCORE_DIGITS)
        row = (str(source), str(landing.path))
        # A file already there gets its row too, if the run that put it there was killed
        # before writing it.
        if self._manifest is not None and (landing.written or row not in self._recorded):
            self._manifest.append([*row, target.label or "", f"{score:.{SCORE_DIGITS}f}"])
            self._recorded.add(row)
        self.filed.append(FiledFile(str(source), str(landing.path), target.label, score, action))

    def _failed(self, source: Path, reason: str) -> None:
        self.filed.append(FiledFile(str(source), None, None, None, FAILED))
        self.errors.append(FailedFile(str(source), reason))


def _os_reason(exc: OSError, source: Path) -> str:
    """Why a file could not be filed, naming the other file when it is not the source."""
    reason = exc.strerror or str(exc)
    reason = reason[:1].lower() + reason[1:]
    if exc.filename is not None and os.fsdecode(exc.filename) != str(source):
        return f"{reason}: {os.fsdecode(exc.filename)}"
    return reason


def _action(landing: Landing, *, moving: bool, dry_run: bool) -> str:
    if not landing.written:
        if not landing.source_removed:
            return ALREADY_THERE
        return WOULD_REMOVE if dry_run else SOURCE_REMOVED
    if moving:
        return WOULD_MOVE if dry_run else MOVED
    return WOULD_COPY if dry_run else COPIED
