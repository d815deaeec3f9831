"""Text drawn into pictures, where an escape cannot be shown and a stray character cannot
be taken back: file names and labels made of characters a font can lay out on one line."""

from __future__ import annotations

REPLACEMENT = "?"


def drawable(text: str) -> str:
    """`text` with each character that is not printable (control characters such as a
    newline, which would start a second line, undecodable bytes that Python keeps as lone
    surrogates, format characters) replaced by "?", as `errors="replace"` encodes them."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else REPLACEMENT for char in text)
