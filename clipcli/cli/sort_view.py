"""`clipcli sort` written out: one JSON object for scripts, and a summary for people (with the
plan, file by file, in a dry run)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any, TextIO

from clipcli.literal import shown
from clipcli.sort import UNSORTED, SortReport


def sort_json(report: SortReport) -> dict[str, Any]:
    """The report as one JSON object:

    {"into": str, "manifest": str (its CSV), "dry_run": bool, "moved": bool (--move),
     "folders": {label: folder name under "into"},
     "images": int, "placed": int, "already_there": int, "unsorted": int, "failed": int,
     "files": [{"source": str, "destination": str | null, "label": str | null,
                "score": float | null, "action": str}],
     "errors": [{"path": str, "error": str}],
     "notes": [str]}

    Paths are absolute. "files" has one entry per image and destination folder (an image
    given several labels with --multi has several); "label" is null in _unsorted, where
    "score" is the best cosine.
    "action" is one of "copied", "moved", "already there" (an identical file was there),
    "source removed" (an identical file was there, so --move removed the source), "would copy",
    "would move", "would remove source" (--dry-run), or "failed" (no destination; the reason is
    in "errors"). The counts are of those entries: "placed" written into a label's folder,
    "unsorted" written into _unsorted, "already_there" found there; "failed" counts images.
    """
    return {
        "into": report.into,
        "manifest": report.manifest,
        "dry_run": report.dry_run,
        "moved": report.moved,
        "folders": report.folders,
        "images": report.images,
        "placed": report.placed,
        "already_there": report.already_there,
        "unsorted": report.unsorted,
        "failed": report.failed,
        "files": [asdict(filed) for filed in report.files],
        "errors": [asdict(error) for error in report.errors],
        "notes": report.notes,
    }


def write_sort(report: SortReport, out: TextIO) -> None:
    """In a dry run the plan, one line a file; then the folders, with how many files each
    got (or has already), and the counts."""
    if report.dry_run:
        for filed in report.files:
            if filed.destination is not None:
                out.write(f"{filed.action}: {shown(filed.source)} -> {shown(filed.destination)}\n")
    verb = "would sort" if report.dry_run else "sorted"
    how = "moving" if report.moved else "copying"
    images = f"{report.images} image{'' if report.images == 1 else 's'}"
    out.write(f"{verb} {images} into {shown(report.into)} ({how}):\n")
    _write_folders(report, out)
    out.write(
        f"placed {report.placed}, already there {report.already_there}, "
        f"unsorted {report.unsorted}, failed {report.failed}\n"
    )
    if report.dry_run:
        out.write("dry run: nothing was changed\n")
    else:
        out.write(f"manifest: {shown(report.manifest)}\n")


def _write_folders(report: SortReport, out: TextIO) -> None:
    """A line a folder that got files: its label, the count, and the folder's name where it is
    not the label itself."""
    counts = Counter(filed.label for filed in report.files if filed.destination is not None)
    rows = [(label, folder) for label, folder in report.folders.items() if counts[label]]
    if counts[None]:
        rows.append((None, UNSORTED))
    width = max((len(shown(label or UNSORTED)) for label, _ in rows), default=0)
    for label, folder in rows:
        name = shown(label or UNSORTED)
        renamed = f"  -> {shown(folder)}/" if label is not None and folder != label else ""
        out.write(f"  {name:<{width}}  {counts[label]:>6}{renamed}\n")
