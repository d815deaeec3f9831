"""CLIP's BPE tokenizer without torch: open_clip's vocabulary run by the `tokenizers` library.

Importing torch costs seconds; a cold `clipcli search` must answer in well under one. The
vocabulary, merges, cleaning and special tokens are open_clip's own (saved as a tokenizer.json
when a model is exported); `matches_open_clip` checks token-for-token agreement before the fast
path is ever used.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Tokens = npt.NDArray[np.int64]
_PLAIN_ASCII = re.compile(r"[\x20-\x7e\t\n]*")

# open_clip's pre-tokenizer pattern (SimpleTokenizer.pat, without its special-token alternation).
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
PROBES = (
    "a photo of a horse.",
    "A Red STAR on a blue-ish background!!",
    "l'été à Paris — café & crème brûlée",
    "   many    spaces\tand\nnewlines   ",
    "emoji 🐴🐎 and numbers 12345 3.14",
    "&amp; html &lt;entities&gt; it's they'll we'd",
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


def build_from_open_clip(open_clip_tokenizer: Any) -> Any:
    """A `tokenizers.Tokenizer` with the vocabulary and merges of open_clip's SimpleTokenizer."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    ranked = sorted(open_clip_tokenizer.bpe_ranks.items(), key=lambda item: item[1])
    bpe = models.BPE(
        vocab=dict(open_clip_tokenizer.encoder),
        merges=[pair for pair, _ in ranked],
        end_of_word_suffix="</w>",
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return tokenizer


class FastTokenizer:
    """Turns texts into [n, context_length] token ids exactly like open_clip's SimpleTokenizer."""

    def __init__(self, tokenizer: Any, sot: int, eot: int, context_length: int) -> None:
        self._tokenizer = tokenizer
        self.sot, self.eot, self.context_length = sot, eot, context_length

    @classmethod
    def load(cls, path: Path, sot: int, eot: int, context_length: int) -> FastTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)), sot, eot, context_length)

    def __call__(self, texts: Sequence[str]) -> Tokens:
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        cleaned = [clean(text) for text in texts]
        encodings = self._tokenizer.encode_batch(cleaned, add_special_tokens=False)
        for row, encoding in enumerate(encodings):
            ids = [self.sot, *encoding.ids, self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot  # truncated texts still end with end-of-text, as in open_clip
            result[row, : len(ids)] = ids
        return result


def matches_open_clip(fast: FastTokenizer, open_clip_tokenizer: Any) -> bool:
    """Whether both give identical ids on probe texts covering unicode, HTML and truncation."""
    expected = open_clip_tokenizer(list(PROBES)).numpy()
    return bool(np.array_equal(fast(PROBES), expected))
