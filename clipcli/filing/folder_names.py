"""Folder names made from free text (labels): one path component that every common filesystem
accepts, and never two texts in one folder.

A label is whatever the user typed: "a/b" would be a folder inside another, ".." the parent,
"CON" a device on Windows, and "Cat" and "cat" one folder on macOS and Windows. Each is turned
into a name that is safe on its own and distinct from the others even where case and Unicode
normalisation are ignored, so that a DEST folder stays sound when copied to such a drive.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

# Bytes, not characters: the limit of most filesystems is 255 bytes a name, and a cap well
# under it leaves room for a " (2)" and for the file names that go inside.
MAX_NAME_BYTES = 100
FALLBACK_NAME = "_label"

# Separators, and the characters Windows (and exFAT drives) refuse in a name.
_FORBIDDEN = re.compile(r'[/\\<>:"|?*]')
# Runs of white space and control characters (a tab, a newline, an escape) read as one space.
_SPACING = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Names Windows keeps for devices, with or without an extension ("nul.txt" too).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{digit}" for digit in "123456789"}
    | {f"LPT{digit}" for digit in "123456789"}
)


def safe_name(text: str) -> str:
    """`text` as one folder name: no separators, no control characters, no leading or
    trailing spaces or dots, at most MAX_NAME_BYTES of UTF-8, never empty, never "." or
    "..", never a Windows device name."""
    name = unicodedata.normalize("NFC", _SURROGATE.sub("\ufffd", text))
    name = _SPACING.sub(" ", _FORBIDDEN.sub("_", name))
    name = _capped(name.strip(" ."), MAX_NAME_BYTES).rstrip(" .")
    if not name:
        return FALLBACK_NAME
    if name.split(".")[0].rstrip(" ").upper() in _RESERVED:
        return name + "_"
    return name


def folder_names(labels: Sequence[str], *, reserved: Iterable[str] = ()) -> dict[str, str]:
    """Each label's folder name, in the labels' order: safe_name, with " (2)", " (3)"... added
    where it would meet an earlier label's folder or a `reserved` name (both compared as a
    case-insensitive filesystem compares them)."""
    taken = {name_key(name) for name in reserved}
    names: dict[str, str] = {}
    for label in labels:
        base = safe_name(label)
        name, number = base, 1
        while name_key(name) in taken:
            number += 1
            suffix = f" ({number})"
            name = _capped(base, MAX_NAME_BYTES - len(suffix.encode())).rstrip(" .") + suffix
        taken.add(name_key(name))
        names[label] = name
    return names


def name_key(name: str) -> str:
    """What a case-insensitive, normalising filesystem (macOS, Windows) sees of a name: two
    names with one key are one file there."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def _capped(text: str, limit: int) -> str:
    """The longest start of `text` that is at most `limit` bytes of UTF-8, cut between
    characters."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")
