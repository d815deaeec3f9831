"""CLIP's text tower run over only the tokens that can change its answer.

The tower is causal and pools at the end-of-text token, so no token after a prompt's end can
reach its embedding: a batch of prompts needs only as many positions as its longest prompt.
Prompts are sorted by length and run in buckets, so that "a photo of a {}." (a dozen tokens)
does not pay for 77, and a short prompt is not padded to a long one beside it. Both the torch
path (torch_clip) and the exported tower (text_tower) run this way.

Whether a tower allows it is detected, not assumed: its attention mask must be causal, its
pooling must pick a position no later than the end of text, and, where the model is at hand,
the trimmed run must give what the full context gives on a set of probe prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from clipcli.encoders.agreement import lowest_cosine
from clipcli.vectors import Embeddings, normalise

# Prompts per run of the trimmed tower. Sorted by length, a bucket of 64 pads a prompt by a
# token or two at most; larger runs were no faster on two cores (324 against 214 prompts/s at
# 256 for ViT-B-32), since attention's cost grows with the bucket's longest prompt.
BUCKET = 64
# Trimming must give what the full context gives, to float rounding.
TRIMMED_MIN_COSINE = 0.99999
# Pooling rules under which the pooled position is at or before the end-of-text token.
_TRIMMABLE_POOLING = ("argmax", "eos", "first")
PROBE_TEXTS = (
    "a photo of a horse.",
    "x",
    "a bad photo of the large striped cat sitting on a red sofa.",
    "word " * 100,  # longer than the context: cut, with no end-of-text token kept in the window
)


def text_parts(model: Any) -> Any | None:
    """The object holding the text tower's layers: open_clip's CLIP keeps them on the model
    itself, CustomTextCLIP (MobileCLIP, PE-Core and others) on `model.text`."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
    for holder in (model, getattr(model, "text", None)):
        if holder is not None and all(getattr(holder, n, None) is not None for n in needed):
            return holder
    return None


def _pooling(parts: Any) -> str:
    return str(getattr(parts, "text_pool_type", getattr(parts, "pool_type", "argmax")))


def _causal(mask: Any) -> bool:
    """Whether an additive attention mask lets each position see only itself and earlier ones."""
    import torch

    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return False
    blocked = torch.isneginf(mask)
    later = torch.ones_like(blocked).triu(1)
    return bool(blocked[later].all()) and not bool(blocked[~later].any())


def trimmed_text_tower(model: Any) -> Any | None:
    """A module computing the model's unnormalised text features over however many tokens it is
    given, or None where fewer tokens could give another answer (no causal mask, pooling at the
    last position or over every token) or the tower is laid out otherwise (CoCa, Hugging Face
    text towers inside open_clip)."""
    import torch
    from open_clip.transformer import text_global_pool

    parts = text_parts(model)
    if parts is None or not _causal(parts.attn_mask):
        return None
    pool = _pooling(parts)
    if pool not in _TRIMMABLE_POOLING or getattr(parts, "cls_emb", None) is not None:
        return None
    eos_id = getattr(parts, "text_eos_id", getattr(parts, "eos_id", None))
    if pool == "eos" and eos_id is None:
        return None

    class TrimmedText(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = parts
            self.pool, self.eos_id = pool, eos_id

        def forward(self, text: Any) -> Any:
            length = text.shape[1]
            x = parts.token_embedding(text) + parts.positional_embedding[:length]
            x = parts.transformer(x, attn_mask=parts.attn_mask[:length, :length])
            x = parts.ln_final(x)
            x = text_global_pool(x, text, pool, eos_token_id=eos_id)
            if isinstance(x, tuple):  # some open_clip versions return (pooled, tokens)
                x = x[0]
            projection = parts.text_projection
            if isinstance(projection, torch.nn.Linear):
                x = projection(x)
            elif projection is not None:
                x = x @ projection
            return x

    return TrimmedText().eval()


def pooled_positions(tokens: np.ndarray, eot: int | None, pool: str = "argmax") -> np.ndarray:
    """Each prompt's last position that matters: its end-of-text token, or the last position
    of the context where the prompt was cut before its end."""
    if pool == "first":
        return np.zeros(len(tokens), dtype=np.int64)
    if pool == "argmax":
        return np.argmax(tokens, axis=1)
    ends = tokens == eot
    return np.where(ends.any(axis=1), np.argmax(ends, axis=1), tokens.shape[1] - 1)


def buckets(positions: np.ndarray, size: int = BUCKET) -> Iterator[tuple[np.ndarray, int]]:
    """Row indices grouped `size` at a time in order of length, each group with the number of
    positions it needs (its longest prompt's)."""
    order = np.argsort(positions, kind="stable")
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        yield rows, int(positions[rows].max()) + 1


def run_bucketed(
    run: Callable[[np.ndarray], np.ndarray],
    tokens: np.ndarray,
    positions: np.ndarray,
    size: int = BUCKET,
) -> Embeddings:
    """Unit-length embeddings of every prompt, run a bucket at a time on its own length and
    put back in the prompts' order."""
    out: np.ndarray | None = None
    for rows, length in buckets(positions, size):
        features = np.asarray(run(np.ascontiguousarray(tokens[rows, :length])), dtype=np.float32)
        if out is None:
            out = np.empty((len(tokens), features.shape[1]), dtype=np.float32)
        out[rows] = features
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    return normalise(out)


def agrees_with_full_context(
    trimmed: Callable[[np.ndarray], Embeddings],
    full: Callable[[np.ndarray], Embeddings],
    tokens: np.ndarray,
    positions: np.ndarray,
) -> bool:
    """Whether the trimmed run, one prompt at a time and in one bucket, matches the full
    context on `tokens` (the probe prompts)."""
    expected = full(tokens)
    one_by_one = np.concatenate(
        [run_bucketed(trimmed, tokens[i : i + 1], positions[i : i + 1]) for i in range(len(tokens))]
    )
    together = run_bucketed(trimmed, tokens, positions)
    return min(lowest_cosine(expected, one_by_one), lowest_cosine(expected, together)) >= (
        TRIMMED_MIN_COSINE
    )
