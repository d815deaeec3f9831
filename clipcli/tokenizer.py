"""CLIP's BPE tokenizer without torch, from open_clip's own vocabulary, merges and pattern.

open_clip's tokenizer module imports torch, which costs seconds, and a cold `clipcli search`
must answer in well under one. When a model is exported, its tokenizer's vocabulary, merge
ranks and pre-tokenizer pattern are saved as plain JSON lists (they load in about 15 ms; the
`tokenizers` library took 60-90 ms to load the same vocabulary), and `matches_open_clip` checks
token-for-token agreement before the fast path is ever used.
"""

from __future__ import annotations

import functools
import html
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Tokens = npt.NDArray[np.int64]
_PLAIN_ASCII = re.compile(r"[\x20-\x7e\t\n]*")
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
    if not _PLAIN_ASCII.fullmatch(text):
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


class FastTokenizer:
    """Turns texts into [n, context_length] token ids exactly like open_clip's SimpleTokenizer."""

    def __init__(
        self,
        vocab: list[str],
        merges: list[str],
        pattern: str,
        flags: int,
        specials: list[str],
        **ids: int,
    ) -> None:
        self._ids = {token: index for index, token in enumerate(vocab)}
        # "left right" keys: byte symbols never include a space, so the pair is unambiguous.
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._pattern_source, self._flags = pattern, flags
        self._specials = frozenset(specials)  # whole tokens wherever they appear in a text
        self.sot, self.eot, self.context_length = ids["sot"], ids["eot"], ids["context_length"]
        self._bpe = functools.lru_cache(maxsize=10_000)(self._merge)

    @classmethod
    def from_open_clip(cls, tokenizer: Any) -> FastTokenizer:
        ranked = sorted(tokenizer.bpe_ranks.items(), key=lambda item: item[1])
        return cls(
            list(tokenizer.encoder),  # insertion order is id order
            [" ".join(pair) for pair, _ in ranked],
            tokenizer.pat.pattern,
            int(tokenizer.pat.flags),
            [tokenizer.decoder[i] for i in tokenizer.all_special_ids],
            sot=tokenizer.sot_token_id,
            eot=tokenizer.eot_token_id,
            context_length=tokenizer.context_length,
        )

    def save(self, path: Path) -> None:
        data = {
            "vocab": list(self._ids),
            "merges": list(self._ranks),
            "pattern": self._pattern_source,
            "flags": self._flags,
            "specials": sorted(self._specials),
            "ids": {"sot": self.sot, "eot": self.eot, "context_length": self.context_length},
        }
        path.write_text(json.dumps(data, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> FastTokenizer:
        data = json.loads(path.read_text())
        return cls(
            data["vocab"],
            data["merges"],
            data["pattern"],
            data["flags"],
            data["specials"],
            **data["ids"],
        )

    @functools.cached_property
    def _pattern(self) -> Any:
        import regex  # open_clip's own dependency: its pattern uses \p{L} classes

        return regex.compile(self._pattern_source, self._flags)

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
        ids = []
        for word in self._pattern.findall(clean(text)):
            if word in self._specials:
                ids.append(self._ids[word])
                continue
            spelled = "".join(symbols[byte] for byte in word.encode("utf-8"))
            ids.extend(self._ids[part] for part in self._bpe(spelled))
        return ids

    def _merge(self, word: str) -> tuple[str, ...]:
        """Byte-pair merges in rank order until no ranked pair is left."""
        parts = [*word[:-1], word[-1] + END_OF_WORD]
        while len(parts) > 1:
            pairs = {f"{a} {b}" for a, b in itertools.pairwise(parts)}
            best = min(pairs, key=lambda pair: self._ranks.get(pair, len(self._ranks)))
            if best not in self._ranks:
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
