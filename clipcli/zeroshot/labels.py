"""Prompt templates and zero-shot label embeddings (open_clip's build_zero_shot_classifier recipe).

A label's embedding is the re-normalised mean of the normalised embeddings of every template filled
with the label. Embeddings are cached on disk per (model, weights, template set, label), so a repeat
run with the same labels never touches the text encoder.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from clipcli.encoders import text_tower
from clipcli.encoders.choose import full_model
from clipcli.errors import UsageError
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.store.text_cache import TextEmbeddingCache
from clipcli.zeroshot.templates import TEXT_FILE_ENCODING, TemplateSet

if TYPE_CHECKING:
    from clipcli.encoders.torch_clip import Encoder
    from clipcli.models.names import ModelSpec
    from clipcli.vectors import Embeddings

TEXTS_PER_FORWARD = 256
# A comma that separates labels: one not escaped as `\,`.
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def parse_labels(labels: str | None, labels_file: Path | None) -> list[str]:
    """Labels from a comma-separated string and/or a file (one per line), de-duplicated in order.

    In the string, `\\,` is a comma that belongs to the label ("a cat\\, sleeping").
    """
    found: list[str] = []
    if labels:
        parts = _UNESCAPED_COMMA.split(labels)
        found += [part.replace("\\,", ",").strip() for part in parts]
    if labels_file is not None:
        try:
            text = labels_file.read_text(encoding=TEXT_FILE_ENCODING)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{labels_file}: cannot read labels file ({exc})") from exc
        found += [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    unique = list(dict.fromkeys(label for label in found if label))
    if not unique:
        raise UsageError("no labels given", hint='use --labels "cat,dog" or --labels-file FILE')
    return unique


class TextEncoder(Protocol):
    """A model's text side: its identity for the cache, and text to unit vectors."""

    spec: ModelSpec

    def encode_texts(self, texts: Sequence[str]) -> Embeddings: ...


@dataclass
class LabelText:
    """The text side that embeds labels missing from the cache: the exported text tower where
    one is verified and the CPU runs ONNX (no torch needed), else the open_clip model, loaded
    on the first label that needs it and only then. Both run each prompt over its own tokens
    only (text_trim.py), so they are equally fast on the CPU; the export skips loading torch."""

    spec: ModelSpec
    device: str
    precision: str
    model: Callable[[], Encoder] | None = None

    def encode_texts(self, texts: Sequence[str]) -> Embeddings:
        fast = self._exported
        return fast(list(texts)) if fast is not None else self.loaded().encode_texts(texts)

    def loaded(self) -> Encoder:
        """The whole open_clip model (for its logit scale, or its text side)."""
        if self.model is None:
            self.model = full_model(None, self.spec, self.device, self.precision)
        return self.model()

    @functools.cached_property
    def _exported(self) -> Callable[[list[str]], Embeddings] | None:
        """Opened once, for all the labels: a session over the tower takes a fraction of a
        second, and it would otherwise be opened for every chunk of prompts."""
        if self.device not in {"auto", "cpu"} or self.precision not in {"auto", "onnx", "int8"}:
            return None
        return text_tower.fast_text_encoder(self.spec, many=True)


def label_embeddings(
    encoder: TextEncoder,
    labels: Sequence[str],
    templates: TemplateSet,
    cache: TextEmbeddingCache | None = None,
    progress: ProgressReporter | None = None,
) -> Embeddings:
    """A [n_labels, dim] matrix of unit-length zero-shot label embeddings.

    Labels missing from the cache are embedded in chunks, and each chunk is cached as soon as it
    is done: a thousand labels through 80 templates is long work, and an interrupted run keeps
    what it finished.
    """
    model_key = encoder.spec.fingerprint
    found = cache.get(model_key, templates.digest, labels) if cache else {}
    missing = [label for label in labels if label not in found]
    if missing:
        progress = progress or NoProgress()
        progress.phase("Embedding labels", len(missing))
        for chunk in _encode_labels(encoder, missing, templates):
            if cache:
                cache.put(model_key, templates.digest, chunk)
            found.update(chunk)
            progress.advance(len(chunk))
    return np.stack([found[label] for label in labels]).astype(np.float32)


def _encode_labels(
    encoder: TextEncoder, labels: Sequence[str], templates: TemplateSet
) -> Iterator[dict[str, Embeddings]]:
    """Each label's embedding: the normalised mean over its templates, a chunk at a time."""
    per_label = len(templates.templates)
    labels_per_forward = max(1, TEXTS_PER_FORWARD // per_label)
    for start in range(0, len(labels), labels_per_forward):
        chunk = labels[start : start + labels_per_forward]
        texts = [text for label in chunk for text in templates.fill(label)]
        embedded = encoder.encode_texts(texts).reshape(len(chunk), per_label, -1)
        means = embedded.mean(axis=1)
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        yield dict(zip(chunk, means.astype(np.float32), strict=True))
