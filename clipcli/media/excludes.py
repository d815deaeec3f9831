"""Patterns that leave files and folders out of discovery, written as in .gitignore files: given
for a whole tree (the folder's `--exclude` patterns), or in a .clipcliignore file, which applies
to its own folder and everything below it, its patterns relative to that folder.

As in git: the last pattern that matches a path decides, `!` bringing it back; the patterns of
a file deeper in the tree come after those above it, and all of them after the patterns given
for the tree; "dir/" matches folders only; a folder left out is not looked into, so nothing in
it can be brought back, but "dir/**" leaves out what is inside dir, not dir itself, so a later
"!dir/keep.jpg" can.

pathspec (GitIgnoreSpec) reads the patterns and decides for files. A walk must also decide for
folders, which pathspec reads as lists of the files inside; so each folder is checked by its own
path against the same patterns less their trailing "/" (it is a folder) and with "dir/**" read
as "dir/*" (the walk asks only of folders it has not left out).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clipcli.errors import UsageError

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

IGNORE_FILE_NAME = ".clipcliignore"

# Characters that a folder's name needs escaped to be read literally in a pattern.
_GLOB_SPECIALS = re.compile(r"([\\*?\[])")


class InvalidExcludePatternError(UsageError):
    """An exclude pattern that gitignore syntax does not allow (a lone `!`, a trailing `\\`)."""


class ExcludeRules:
    """The patterns in force in one folder of a walk, relative to the walk's root."""

    # A plain class: dataclasses would add 10 ms to importing discovery.
    __slots__ = ("_files", "_folders", "lines")

    def __init__(self, lines: tuple[str, ...] = (), source: Path | None = None) -> None:
        self.lines = lines
        self._files: GitIgnoreSpec | None = None
        self._folders: GitIgnoreSpec | None = None
        if lines:
            self._files = _spec([_for_files(line) for line in lines], source)
            self._folders = _spec([_for_folders(line) for line in lines], source)

    def __bool__(self) -> bool:
        return self._files is not None

    @classmethod
    def given(cls, patterns: Sequence[str]) -> ExcludeRules:
        """Rules from patterns for the whole tree; InvalidExcludePatternError for a bad one."""
        if isinstance(patterns, str):
            patterns = [patterns]  # one pattern, not one per character
        return cls(tuple(pattern for pattern in patterns if _is_pattern(pattern)))

    def with_ignore_file(self, folder: str, ignore_file: Path) -> ExcludeRules:
        """These rules followed by those of the .clipcliignore in `folder` (relative to the
        root, "" for the root itself, otherwise ending in "/").

        A file that cannot be read adds nothing, as a folder that cannot be read is skipped.
        """
        try:
            # utf-8-sig: Windows' Notepad starts the file with a byte-order mark.
            with open(ignore_file, encoding="utf-8-sig", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            return self
        _spec(lines, ignore_file)  # a bad line is named by its own file and number
        rooted = tuple(_rooted(line, folder) for line in lines if _is_pattern(line))
        return ExcludeRules(self.lines + rooted, ignore_file) if rooted else self

    def excludes(self, path: str) -> bool:
        """Whether a path relative to the root (a folder's ending in "/") is left out."""
        if path.endswith("/"):
            return self._folders is not None and self._folders.match_file(path[:-1])
        return self._files is not None and self._files.match_file(path)


def _is_pattern(line: str) -> bool:
    return bool(line.strip()) and not line.startswith("#")


def _rooted(line: str, folder: str) -> str:
    """A pattern from a .clipcliignore in `folder`, as the same pattern relative to the root."""
    if not folder:
        return line
    negation = "!" if line.startswith("!") else ""
    pattern = line[len(negation) :]
    prefix = "/" + _GLOB_SPECIALS.sub(r"\\\1", folder)
    # A slash at the start or in the middle ties a pattern to its folder; otherwise it matches
    # at any depth below it.
    if "/" in pattern.rstrip(" ").rstrip("/"):
        return negation + prefix + pattern.lstrip("/")
    return negation + prefix + "**/" + pattern


def _for_files(line: str) -> str:
    # "dir/**/" is the folders inside dir, at any depth, but pathspec matches dir itself too.
    # Trailing spaces are not part of a pattern unless escaped, which a "*" or "/" before them
    # cannot be.
    pattern = line.rstrip(" ")
    return pattern[:-4] + "/*/" if pattern.endswith("/**/") else line


def _for_folders(line: str) -> str:
    pattern = _for_files(line).rstrip(" ")
    if pattern.endswith("/**"):
        pattern = pattern[:-3] + "/*"
    if pattern.endswith("/") and not pattern.endswith("\\/"):
        pattern = pattern[:-1]
    return "" if pattern in ("", "!") else pattern


def _spec(lines: Sequence[str], source: Path | None) -> GitIgnoreSpec:
    # pathspec takes 20 ms to import: paid only by walks that have patterns.
    from pathspec import GitIgnoreSpec

    try:
        return GitIgnoreSpec.from_lines(lines)
    except (ValueError, re.error):
        raise _invalid(lines, source) from None


def _invalid(lines: Sequence[str], source: Path | None) -> InvalidExcludePatternError:
    from pathspec import GitIgnoreSpec

    bad = 0
    for number, line in enumerate(lines):  # the first line that fails alone is the one to name
        try:
            GitIgnoreSpec.from_lines([line])
        except (ValueError, re.error):
            bad = number
            break
    where = "" if source is None else f" (line {bad + 1} of {source})"
    return InvalidExcludePatternError(
        f"invalid exclude pattern {lines[bad]!r}{where}",
        hint="exclude patterns are written as in .gitignore files",
    )
