"""CLIP's BPE tokenizer without torch, from open_clip's own vocabulary, merges and pattern.

open_clip's tokenizer module imports torch, which costs seconds, and a cold `clipcli search`
must answer in well under one. When a model is exported, its tokenizer's vocabulary and merge
ranks are saved as two sorted tables of strings beside its pattern and special ids, and
`matches_open_clip` checks the saved tokenizer token for token before the fast path is used.
A query looks up a few hundred strings at most, so the tables are searched in place: building
dicts of the 49,408 tokens and 48,894 merges took 45-70 ms of every cold search (the
`tokenizers` library took 60-90 ms to load them); opening the tables takes about 5 ms.
"""

from __future__ import annotations

import bisect
import functools
import html
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Tokens = npt.NDArray[np.int64]
_PLAIN_ASCII = re.compile(r"[\x20-\x7e\t\n]*")
# Plain ASCII that ftfy leaves as it is: all but `&`, whose HTML references ftfy unescapes once
# before open_clip unescapes twice more ("&amp;amp;amp;" is "&" to open_clip).
_NOTHING_FOR_FTFY = re.compile(r"[\x20-\x25\x27-\x7e\t\n]*")
END_OF_WORD = "</w>"

PROBES = (
    "a photo of a horse.",
    "A Red STAR on a blue-ish background!!",
    "l'été à Paris — café & crème brûlée",
    "   many    spaces\tand\nnewlines   ",
    "emoji 🐴🐎 and numbers 12345 3.14",
    "&amp; html &lt;entities&gt; it's they'll we'd",
    "<start_of_text>special<end_of_text> tokens",
    "word " * 100,
    "",
)


def clean(text: str) -> str:
    """open_clip's 'lower' cleaning: fix mojibake, unescape HTML twice, squeeze spaces, lower."""
    if not _NOTHING_FOR_FTFY.fullmatch(text):
        # Plain printable ASCII has no mojibake to fix; ftfy costs a noticeable import.
        import ftfy

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


@functools.cache
def _byte_symbols() -> tuple[str, ...]:
    """GPT-2's printable stand-in for each byte value, which CLIP's vocabulary is written in.

    Printable bytes stand for themselves; the others take code points from 256 upwards, in order.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)}
    printable |= set(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return tuple(symbols[byte] for byte in range(256))


class Lookup(Protocol):
    def get(self, key: str, default: int, /) -> int: ...


class SortedTable:
    """Strings mapped to numbers, kept as one sorted newline-separated blob and searched by
    bisection: opening it builds no dict (see the module docstring)."""

    def __init__(self, blob: bytes, values: npt.NDArray[np.int32]) -> None:
        ends = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 10)
        self._blob = blob
        self._starts = [0, *(ends + 1).tolist()]
        self._ends = [*ends.tolist(), len(blob)]
        self._values = values

    @classmethod
    def build(cls, strings: Sequence[str]) -> SortedTable:
        """The table of `strings`, each mapped to its position in the sequence."""
        order = sorted(range(len(strings)), key=lambda i: strings[i].encode("utf-8"))
        blob = b"\n".join(strings[i].encode("utf-8") for i in order)
        return cls(blob, np.asarray(order, dtype=np.int32))

    @property
    def arrays(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
        return np.frombuffer(self._blob, dtype=np.uint8), self._values

    def get(self, key: str, default: int, /) -> int:
        target = key.encode("utf-8")
        blob, starts, ends = self._blob, self._starts, self._ends
        row = bisect.bisect_left(
            range(len(starts)), target, key=lambda i: blob[starts[i] : ends[i]]
        )
        if row < len(starts) and blob[starts[row] : ends[row]] == target:
            return int(self._values[row])
        return default


# CLIP's pattern uses Unicode classes, for which the `regex` module is needed (about 30 ms to
# import). On printable ASCII those classes are plain ranges, which the standard `re` handles.
_ASCII_CLASSES = {r"\p{L}": "a-zA-Z", r"\p{N}": "0-9"}
_NOT_FOUND = 1 << 30


class FastTokenizer:
    """Turns texts into [n, context_length] token ids exactly like open_clip's SimpleTokenizer."""

    def __init__(
        self,
        ids: Lookup,
        ranks: Lookup,
        pattern: str,
        flags: int,
        specials: list[str],
        *,
        sot: int,
        eot: int,
        context_length: int,
    ) -> None:
        self._ids = ids
        # "left right" keys: byte symbols never include a space, so the pair is unambiguous.
        self._ranks = ranks
        self._pattern_source, self._flags = pattern, flags
        self._specials = frozenset(specials)  # whole tokens wherever they appear in a text
        self.sot, self.eot, self.context_length = sot, eot, context_length
        self._bpe = functools.lru_cache(maxsize=10_000)(self._merge)

    @staticmethod
    def save_open_clip(tokenizer: Any, path: Path) -> None:
        """Save open_clip's SimpleTokenizer as `path` (JSON) and its tables beside it (.npz)."""
        ranked = sorted(tokenizer.bpe_ranks.items(), key=lambda item: item[1])
        vocab = SortedTable.build(list(tokenizer.encoder))  # insertion order is id order
        merges = SortedTable.build([" ".join(pair) for pair, _ in ranked])
        data = {
            "pattern": tokenizer.pat.pattern,
            "flags": int(tokenizer.pat.flags),
            "specials": sorted(tokenizer.decoder[i] for i in tokenizer.all_special_ids),
            "ids": {
                "sot": tokenizer.sot_token_id,
                "eot": tokenizer.eot_token_id,
                "context_length": tokenizer.context_length,
            },
        }
        (vocab_blob, vocab_ids), (merge_blob, merge_ranks) = vocab.arrays, merges.arrays
        with open(_tables_path(path), "wb") as handle:
            np.savez(handle, vocab=vocab_blob, ids=vocab_ids, merges=merge_blob, ranks=merge_ranks)
        path.write_text(json.dumps(data, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> FastTokenizer:
        data = json.loads(path.read_text())
        with np.load(_tables_path(path)) as tables:
            ids = SortedTable(tables["vocab"].tobytes(), tables["ids"])
            ranks = SortedTable(tables["merges"].tobytes(), tables["ranks"])
        return cls(ids, ranks, data["pattern"], data["flags"], data["specials"], **data["ids"])

    @functools.cached_property
    def _pattern(self) -> Any:
        import regex  # open_clip's own dependency: its pattern uses \p{L} classes

        return regex.compile(self._pattern_source, self._flags)

    @functools.cached_property
    def _ascii_pattern(self) -> re.Pattern[str] | None:
        """The same pattern for printable ASCII text, in `re`; None if it has other classes."""
        source = self._pattern_source
        for unicode_class, ascii_range in _ASCII_CLASSES.items():
            source = source.replace(unicode_class, ascii_range)
        if r"\p" in source or r"\P" in source:
            return None
        return re.compile(source, re.ASCII | (re.IGNORECASE if self._flags & 2 else 0))

    def __call__(self, texts: Sequence[str]) -> Tokens:
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot  # truncated texts still end with end-of-text, as in open_clip
            result[row, : len(ids)] = ids
        return result

    def encode(self, text: str) -> list[int]:
        """The token ids of one text, without start and end tokens."""
        symbols = _byte_symbols()
        cleaned = clean(text)
        ascii_only = _PLAIN_ASCII.fullmatch(cleaned) and self._ascii_pattern is not None
        pattern = self._ascii_pattern if ascii_only else self._pattern
        ids = []
        for word in pattern.findall(cleaned):
            if word in self._specials:
                ids.append(self._id(word))
                continue
            spelled = "".join(symbols[byte] for byte in word.encode("utf-8"))
            ids.extend(self._id(part) for part in self._bpe(spelled))
        return ids

    def _id(self, token: str) -> int:
        found = self._ids.get(token, _NOT_FOUND)
        if found == _NOT_FOUND:
            raise KeyError(token)  # as open_clip's own lookup would
        return found

    def _merge(self, word: str) -> tuple[str, ...]:
        """Byte-pair merges in rank order until no ranked pair is left."""
        parts = [*word[:-1], word[-1] + END_OF_WORD]
        while len(parts) > 1:
            ranked = {
                f"{a} {b}": self._ranks.get(f"{a} {b}", _NOT_FOUND)
                for a, b in itertools.pairwise(parts)
            }
            best = min(ranked, key=ranked.__getitem__)
            if ranked[best] == _NOT_FOUND:
                break
            left, right = best.split(" ")
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == left and parts[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)


def matches_open_clip(fast: FastTokenizer, open_clip_tokenizer: Any) -> bool:
    """Whether both give identical ids on probe texts covering unicode, HTML and truncation."""
    expected = open_clip_tokenizer(list(PROBES)).numpy()
    return bool(np.array_equal(fast(PROBES), expected))


def _tables_path(path: Path) -> Path:
    return path.with_suffix(".npz")
