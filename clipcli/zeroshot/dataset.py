"""Labelled photos in the image-folder layout: one subfolder per class, images anywhere below it.

Classes come in sorted folder order, as torchvision's ImageFolder and CLIP_benchmark order them,
so a classnames file written for one of those lines up with the folders here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from clipcli.errors import UsageError
from clipcli.media.discover import discover_images, is_image_name, is_junk_name
from clipcli.zeroshot.templates import TEXT_FILE_ENCODING

_SEPARATORS = re.compile(r"[_\-\s]+")


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: int  # the index of its class


@dataclass(frozen=True)
class ImageFolder:
    """A dataset read from disk: its classes (those with images), and what was left out."""

    root: Path
    folders: list[str]  # class folder names, sorted
    labels: list[str]  # the label text of each class
    images: list[LabelledImage]  # sorted by path
    empty: list[str]  # class folders that hold no images: not classes
    outside: list[Path]  # images directly in the root, in no class folder


def folder_label(name: str) -> str:
    """A folder name read as a label: `golden_retriever` and `golden-retriever` say
    "golden retriever"."""
    return _SEPARATORS.sub(" ", name).strip() or name


def read_image_folder(root: Path, classnames: Path | None = None) -> ImageFolder:
    """The classes and images under `root`; a usage error when it cannot be a dataset."""
    folders = _class_folders(root)
    labels = _labels(folders, classnames)
    found = [discover_images(root / folder) for folder in folders]
    kept = [index for index, files in enumerate(found) if files]
    if len(kept) < 2:
        have = "no" if not kept else "one"
        raise UsageError(
            f"{root}: {have} class folder with images; a dataset needs at least two",
            hint="put each class's images in a subfolder named for it",
        )
    images = [
        LabelledImage(path, label) for label, index in enumerate(kept) for path in found[index]
    ]
    return ImageFolder(
        root=root,
        folders=[folders[index] for index in kept],
        labels=[labels[index] for index in kept],
        images=sorted(images, key=lambda image: str(image.path)),
        empty=[folder for folder, files in zip(folders, found, strict=True) if not files],
        outside=_loose_images(root),
    )


def _class_folders(root: Path) -> list[str]:
    try:
        with os.scandir(root) as scan:
            entries = list(scan)
    except FileNotFoundError:
        raise UsageError(f"{root}: no such folder") from None
    except NotADirectoryError:
        raise UsageError(
            f"{root}: not a folder", hint="give a folder with one subfolder per class"
        ) from None
    except OSError as exc:
        raise UsageError(f"{root}: cannot read the folder ({exc.strerror or exc})") from None
    folders = sorted(e.name for e in entries if not e.name.startswith(".") and _is_dir(e))
    if len(folders) < 2:
        raise UsageError(
            f"{root}: {len(folders)} class folder{'' if len(folders) == 1 else 's'}; "
            "a dataset needs at least two",
            hint="put each class's images in a subfolder named for it",
        )
    return folders


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _loose_images(root: Path) -> list[Path]:
    with os.scandir(root) as scan:
        return sorted(
            Path(entry.path)
            for entry in scan
            if not entry.name.startswith(".")
            and not is_junk_name(entry.name)
            and is_image_name(entry.name)
            and entry.is_file()
        )


def _labels(folders: list[str], classnames: Path | None) -> list[str]:
    """Each folder's label: from the classnames file where it names one, else the folder's."""
    labels = [folder_label(folder) for folder in folders]
    if classnames is not None:
        named = read_classnames(classnames, folders)
        labels = [named.get(folder, label) for folder, label in zip(folders, labels, strict=True)]
    seen: dict[str, str] = {}
    for folder, label in zip(folders, labels, strict=True):
        if label.casefold() in seen:
            raise UsageError(
                f"class folders '{seen[label.casefold()]}' and '{folder}' both read as "
                f"the label '{label}'",
                hint="name them apart with --classnames FILE",
            )
        seen[label.casefold()] = folder
    return labels


def read_classnames(path: Path, folders: list[str]) -> dict[str, str]:
    """Folder name -> label text, from lines `folder<TAB>label`, or from one label per line in
    sorted folder order (as CLIP_benchmark's classnames files are). Blank lines and `#` comments
    are skipped."""
    try:
        text = path.read_text(encoding=TEXT_FILE_ENCODING)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read classnames file ({exc})") from None
    lines = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if any("\t" in line for _, line in lines):
        return _mapping(path, lines, folders)
    if len(lines) != len(folders):
        raise UsageError(
            f"{path}: {len(lines)} labels for {len(folders)} class folders",
            hint="give one label per class folder, in sorted folder order, or lines "
            "`folder<TAB>label`",
        )
    return dict(zip(folders, (line for _, line in lines), strict=True))


def _mapping(path: Path, lines: list[tuple[int, str]], folders: list[str]) -> dict[str, str]:
    named: dict[str, str] = {}
    for number, line in lines:
        folder, tab, label = line.partition("\t")
        folder, label = folder.strip(), label.strip()
        if not tab or not folder or not label:
            raise UsageError(f"{path}:{number}: expected `folder<TAB>label`")
        named[folder] = label
    unknown = sorted(set(named) - set(folders))
    if unknown:
        raise UsageError(
            f"{path}: no class folder named {', '.join(repr(name) for name in unknown[:3])}"
            + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""),
            hint=f"the class folders are {', '.join(folders[:5])}"
            + (", ..." if len(folders) > 5 else ""),
        )
    return named
