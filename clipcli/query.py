"""A search query (text terms added and subtracted, example images) turned into one unit vector.

`"beach + sunset - people"` is three terms: each a phrase, signed by the ` + ` or ` - ` before
it (spaces on both sides; a `-` inside a word, as in "black-and-white", stays part of it) and
weighted by an optional `2*` in front. The query vector is the weighted sum of the terms' unit
embeddings and of the example images' (each +1, and -1 for an image to move away from),
normalised again: the arithmetic of rclip and of the CLIP paper's embedding space.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

import numpy as np

from clipcli.encoders import text_tower
from clipcli.encoders.batching import embed_files
from clipcli.encoders.choose import full_model, load_image_encoder
from clipcli.encoders.protocols import ImageEncoder
from clipcli.encoders.torch_clip import Encoder
from clipcli.errors import UsageError
from clipcli.media.taken import wall_seconds
from clipcli.models.names import ModelSpec
from clipcli.store.text_cache import RAW_QUERY, TextEmbeddingCache
from clipcli.vectors import Embeddings

# An operator: + or - with white space on both sides (or at the very start, before a term);
# the space after it is left to the next term, so that "a + - b" shows a term missing.
_OPERATOR = re.compile(r"(?:^|\s+)([+-])(?=\s)")
_WEIGHTED = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*\*\s*(.*)", re.DOTALL)
# Below this the terms cancel out: the direction of what is left is noise.
CANCELLED = 1e-6
# Embeds texts to unit vectors, a row per text.
TextEncoder = Callable[[list[str]], Embeddings]
HINT = 'write terms as "beach + sunset - people" or "2*beach + sunset", or give --literal'


@dataclass(frozen=True)
class Term:
    text: str
    weight: float  # negative for a term subtracted


@dataclass(frozen=True)
class Query:
    """What to search for: text terms, images to move towards, images to move away from."""

    terms: list[Term] = field(default_factory=list)
    images: Sequence[Path] = ()
    not_images: Sequence[Path] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.terms or self.images or self.not_images)


@dataclass(frozen=True)
class Filters:
    """Which photos a search may return: under folders, taken between dates (wall-clock
    seconds, as the catalog keeps them: see clipcli.media.taken), of file types."""

    under: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    extensions: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return (
            bool(self.under or self.extensions)
            or self.since is not None
            or (self.until is not None)
        )


def parse_filters(
    under: Sequence[Path] = (),
    since: str | None = None,
    until: str | None = None,
    extensions: str | None = None,
) -> Filters:
    """The filters of --under, --since, --until and --ext, checked.

    A date is YYYY-MM-DD (a whole day: --until takes it to its last second), or a date and a
    time, YYYY-MM-DDTHH:MM[:SS]; both bounds are inclusive, in the camera's own clock.
    """
    start = None if since is None else _moment(since, "--since", end=False)
    stop = None if until is None else _moment(until, "--until", end=True)
    if start is not None and stop is not None and start > stop:
        raise UsageError(f"--since {since} comes after --until {until}")
    types = tuple(
        part.strip().lstrip(".").lower() for part in (extensions or "").split(",") if part.strip()
    )
    if extensions is not None and not types:
        raise UsageError(f"--ext '{extensions}': no file type", hint="e.g. --ext jpg,heic")
    return Filters(tuple(os.path.abspath(folder) for folder in under), start, stop, types)


def _moment(text: str, option: str, *, end: bool) -> float:
    try:
        if "T" in text or " " in text.strip():
            return wall_seconds(datetime.fromisoformat(text.strip()))
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{option} {text}: not a date", hint="use YYYY-MM-DD, or YYYY-MM-DDTHH:MM"
        ) from None
    return wall_seconds(datetime.combine(day, time.max if end else time.min))


def parse_terms(text: str | None, *, literal: bool = False) -> list[Term]:
    """The signed, weighted terms of a text query; none for a query of only white space.

    With `literal` the whole text is one term, whatever it holds.
    """
    if text is None or not text.strip():
        return []
    if literal:
        return [Term(text.strip(), 1.0)]
    pieces = _OPERATOR.split(text)  # [term, sign, term, sign, term...]
    signed = pieces[1:] if len(pieces) > 1 and not pieces[0].strip() else ["+", *pieces]
    return [
        _term(text, sign, raw.strip()) for sign, raw in zip(signed[::2], signed[1::2], strict=True)
    ]


def _term(query: str, sign: str, raw: str) -> Term:
    weight = 1.0
    weighted = _WEIGHTED.fullmatch(raw)
    if weighted:
        weight, raw = float(weighted.group(1)), weighted.group(2).strip()
    if not raw:
        raise UsageError(f"query '{query.strip()}': a '{sign}' with no term after it", hint=HINT)
    return Term(raw, weight if sign == "+" else -weight)


def query_vector(
    spec: ModelSpec,
    query: Query,
    device: str = "auto",
    *,
    text_encoder: TextEncoder | None = None,
) -> Embeddings:
    """The query's unit vector in the model's space (see the module's docstring).

    Text terms come from the query cache, else the exported text tower (no torch), else the
    model; images go through the exported image tower when auto would run it. A
    `text_encoder` given (a server's KeptTextEncoder) embeds the terms instead, and keeps
    whatever cache it likes.
    """
    loaded = None
    examples = [*query.images, *query.not_images]
    if examples:
        loaded = load_image_encoder(spec, device, images=len(examples))
    model = full_model(loaded, spec, device)  # loaded at most once, for either part
    parts: list[tuple[float, Embeddings]] = []
    if query.terms:
        wanted = [term.text for term in query.terms]
        if text_encoder is None:
            texts = _term_vectors(spec, wanted, device, model)
        else:
            unique = list(dict.fromkeys(wanted))
            texts = dict(zip(unique, text_encoder(unique), strict=True))
        parts += [(term.weight, texts[term.text]) for term in query.terms]
    if loaded is not None:
        vectors = image_vectors(loaded, examples)
        signs = [1.0] * len(query.images) + [-1.0] * len(query.not_images)
        parts += list(zip(signs, vectors, strict=True))
    total = np.sum([weight * vector.astype(np.float64) for weight, vector in parts], axis=0)
    norm = float(np.linalg.norm(total))
    if norm < CANCELLED:
        raise UsageError("the query's terms cancel each other out", hint=HINT)
    return (total / norm).astype(np.float32)


def image_vectors(encoder: ImageEncoder, paths: Sequence[Path]) -> Embeddings:
    """The unit embedding of each image, in order; the first that cannot be decoded raises
    its ImageDecodeError."""
    found: dict[Path, Embeddings] = {}
    for batch in embed_files(encoder, list(dict.fromkeys(paths)), batch_size=8):
        if batch.failures:
            raise batch.failures[0]
        found.update(zip(batch.paths, batch.embeddings, strict=True))
    return np.stack([found[path] for path in paths])


def _term_vectors(
    spec: ModelSpec, texts: list[str], device: str, model: Callable[[], Encoder]
) -> dict[str, Embeddings]:
    """Each term's unit embedding, through the query cache: a repeated term costs nothing."""
    unique = list(dict.fromkeys(texts))
    with TextEmbeddingCache.default() as cache:
        found = cache.get(spec.fingerprint, RAW_QUERY, unique)
        missing = [text for text in unique if text not in found]
        if missing:
            embedded = dict(zip(missing, _embed_texts(spec, missing, device, model), strict=True))
            cache.put(spec.fingerprint, RAW_QUERY, embedded)
            found.update(embedded)
    return found


def _embed_texts(
    spec: ModelSpec, texts: list[str], device: str, model: Callable[[], Encoder]
) -> Embeddings:
    fast = text_tower.fast_text_encoder(spec) if device in {"auto", "cpu"} else None
    if fast is not None:
        return fast(texts)
    encoder = model()
    text_tower.prepare_fast_search(encoder)  # so that the next search is fast
    return encoder.encode_texts(texts)


class KeptTextEncoder:
    """Text embedding for a process that answers many queries (the server): the exported text
    tower's session opened once, else the model, loaded at the first query and kept; each of
    the latest texts embedded once.

    The query cache on disk is left out: it reads every query it holds to find one, where a
    warm tower embeds a new query in milliseconds.
    """

    def __init__(self, spec: ModelSpec, device: str = "auto", remembered: int = 4096) -> None:
        self._spec, self._device = spec, device
        self._tower_allowed = device in {"auto", "cpu"}
        self._fast = self._exported_tower()
        self._model: Encoder | None = None
        self._loading = threading.Lock()
        self._one = functools.lru_cache(maxsize=remembered)(self._embed_one)

    def __call__(self, texts: list[str]) -> Embeddings:
        return np.stack([self._one(text) for text in texts])

    def _embed_one(self, text: str) -> Embeddings:
        encode = self._fast or self._loaded()
        return encode([text])[0]

    def _exported_tower(self) -> TextEncoder | None:
        if not self._tower_allowed:
            return None
        # Its threads sleep between queries: the server's other requests need the cores.
        return text_tower.fast_text_encoder(self._spec, spin=False)

    def _loaded(self) -> TextEncoder:
        """The model, loaded once, its text tower exported on the way: from then on (and at
        the next start) the exported tower answers, where the model allows one."""
        with self._loading:
            if self._fast is None and self._model is None:
                model = full_model(None, self._spec, self._device)()
                text_tower.prepare_fast_search(model)
                self._fast = self._exported_tower()
                self._model = None if self._fast is not None else model
            if self._fast is not None:
                return self._fast
            return self._model.encode_texts  # type: ignore[union-attr]  # set just above
