"""Strings from users and disks (paths, labels, messages) written literally and on one line.

A file name may hold anything but `/` and NUL: newlines, tabs, terminal escape sequences, and
bytes that are not UTF-8, which Python decodes to lone surrogates ("latin1-\\udce9.jpg").
Written as they are, they would split one result over several lines, drive the terminal, or
crash the write. Each function here gives one line that can be written to any UTF-8 stream.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# Characters no line of output may hold as they are: control characters (Cc: tab, newline,
# escape, DEL, the C1 controls), surrogates (Cs: undecodable bytes) and the Unicode line and
# paragraph separators (Zl, Zp), which some terminals and editors break lines at.
_UNSAFE = frozenset({"Cc", "Cs", "Zl", "Zp"})
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def _char(char: str) -> str:
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    if 0xDC80 <= code <= 0xDCFF:  # the byte that was not UTF-8, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"  # an ASCII control: the same byte on disk
    return f"\\u{code:04x}"  # a C1 control, a line separator, a surrogate of no byte


def _is_plain(text: str) -> bool:
    return text.isprintable() or all(unicodedata.category(char) not in _UNSAFE for char in text)


def shown(text: str) -> str:
    """`text` for people (tables, summaries, stderr): control characters, undecodable bytes
    and line separators escaped (`\\n`, `\\t`, `\\x1b`, `\\xe9`), everything else as it is."""
    if _is_plain(text):
        return text
    return "".join(_char(c) if unicodedata.category(c) in _UNSAFE else c for c in text)


def escaped(text: str) -> str:
    """`text` for the line formats (plain, tsv, paths one per line): as `shown`, and a
    backslash doubled, so that the escapes read back to exactly the original bytes."""
    return shown(text.replace("\\", "\\\\"))


def unicode_safe(text: str) -> str:
    """`text` for JSON and CSV, which can hold any character but not an undecodable byte:
    each such byte becomes `\\xNN` (as Python's backslashreplace writes it)."""
    return _SURROGATE.sub(lambda match: _char(match.group()), text)


def unicode_safe_data(data: Any) -> Any:
    """`data` (JSON-able lists, dicts, strings, numbers) with `unicode_safe` applied to every
    string in it, keys included."""
    if isinstance(data, str):
        return unicode_safe(data)
    if isinstance(data, dict):
        return {unicode_safe_data(k): unicode_safe_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [unicode_safe_data(item) for item in data]
    return data
