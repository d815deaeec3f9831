"""Prompt templates and zero-shot label embeddings (open_clip's build_zero_shot_classifier recipe).

A label's embedding is the re-normalised mean of the normalised embeddings of every template filled
with the label. Embeddings are cached on disk per (model, weights, template set, label), so a repeat
run with the same labels never touches the text encoder.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from clipcli.errors import UsageError
from clipcli.progress import NoProgress, ProgressReporter

if TYPE_CHECKING:
    from clipcli.encoder import Embeddings
    from clipcli.models import ModelSpec

# Installed wheels carry the templates inside the package; a source checkout has them at the top.
PROMPT_DIRS = (Path(__file__).parent / "prompts", Path(__file__).parent.parent / "prompts")
TEMPLATE_SUFFIX = ".txt"
TEXTS_PER_FORWARD = 256
TEXT_CACHE_FILE = "text_embeddings.sqlite3"
# The cache key standing for "no template": search queries are embedded as typed.
RAW_QUERY = "raw-query"
# A comma that separates labels: one not escaped as `\,`.
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
# UTF-8, less the byte-order mark that Windows editors put first, which would start a label.
TEXT_FILE_ENCODING = "utf-8-sig"


@dataclass(frozen=True)
class TemplateSet:
    """Named prompt templates; '{}' stands for the label."""

    name: str
    templates: tuple[str, ...]

    @property
    def digest(self) -> str:
        """Identity of the set's content, so an edited template file gets fresh embeddings."""
        return hashlib.sha256("\n".join(self.templates).encode()).hexdigest()[:16]

    def fill(self, label: str) -> list[str]:
        return [template.replace("{}", label) for template in self.templates]


def template_names() -> list[str]:
    """Names accepted by --templates besides file paths."""
    names = {p.stem for d in PROMPT_DIRS if d.is_dir() for p in d.glob(f"*{TEMPLATE_SUFFIX}")}
    return sorted(names)


def load_templates(name_or_path: str) -> TemplateSet:
    """A template set by name (a file in prompts/) or from a file path."""
    path = Path(name_or_path)
    if not _is_file(path, name_or_path):
        for folder in PROMPT_DIRS:
            candidate = folder / f"{name_or_path}{TEMPLATE_SUFFIX}"
            if _is_file(candidate, name_or_path):
                path = candidate
                break
        else:
            raise UsageError(
                f"unknown template set '{name_or_path}'",
                hint=f"use one of {', '.join(template_names())} or a file path",
            )
    return TemplateSet(path.stem, parse_template_file(path))


def _is_file(path: Path, name_or_path: str) -> bool:
    # is_file() answers False only for names that do not exist; a name too long for the file
    # system, or a folder on the way that cannot be searched, raises instead.
    try:
        return path.is_file()
    except OSError as exc:
        raise UsageError(
            f"{name_or_path}: cannot read template file ({exc.strerror or exc})"
        ) from None


def parse_template_file(path: Path) -> tuple[str, ...]:
    """One template per line; blank lines and '#' comments are ignored."""
    try:
        lines = path.read_text(encoding=TEXT_FILE_ENCODING).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read template file ({exc})") from exc
    templates = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            raise UsageError(f"{path}:{number}: a template needs exactly one '{{}}' placeholder")
        templates.append(line)
    if not templates:
        raise UsageError(f"{path}: no templates in file")
    return tuple(templates)


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


class TextEmbeddingCache:
    """Text embeddings on disk, keyed by model fingerprint, template digest and text."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS label_embeddings (model TEXT NOT NULL, templates TEXT NOT"
            " NULL, label TEXT NOT NULL, embedding BLOB NOT NULL, PRIMARY KEY (model, templates,"
            " label))"
        )

    def get(self, model: str, templates: str, labels: Sequence[str]) -> dict[str, Embeddings]:
        found: dict[str, Embeddings] = {}
        rows = self._db.execute(
            "SELECT label, embedding FROM label_embeddings WHERE model = ? AND templates = ?",
            (model, templates),
        )
        wanted = {_stored_text(label): label for label in labels}
        for stored, blob in rows:
            if stored in wanted:
                found[wanted[stored]] = np.frombuffer(blob, dtype="<f4").copy()
        return found

    def missing(self, model: str, templates: str, labels: Sequence[str]) -> list[str]:
        """The labels of `labels` that have no cached embedding yet."""
        found = self.get(model, templates, labels)
        return [label for label in labels if label not in found]

    def put(self, model: str, templates: str, embeddings: dict[str, Embeddings]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO label_embeddings VALUES (?, ?, ?, ?)",
                [
                    (model, templates, _stored_text(k), v.astype("<f4").tobytes())
                    for k, v in embeddings.items()
                ],
            )

    def models(self) -> dict[str, tuple[int, int]]:
        """Per model fingerprint: how many embeddings are cached, and how many of them are of
        search queries."""
        rows = self._db.execute(
            "SELECT model, count(*), total(templates = ?) FROM label_embeddings GROUP BY model",
            (RAW_QUERY,),
        )
        return {model: (count, int(queries)) for model, count, queries in rows}

    def forget(self, models: Collection[str]) -> int:
        """Delete every embedding of these model fingerprints, and give the file's space back;
        returns how many were deleted."""
        with self._db:
            deleted = sum(
                self._db.execute("DELETE FROM label_embeddings WHERE model = ?", (m,)).rowcount
                for m in models
            )
        if deleted:  # deleted rows only free pages inside the file
            with contextlib.suppress(sqlite3.OperationalError):  # a reader holds it: next time
                self._db.execute("VACUUM")
        return deleted

    def close(self) -> None:
        self._db.close()

    @classmethod
    def default(cls) -> TextEmbeddingCache:
        from clipcli.settings import cache_dir

        return cls(cache_dir() / TEXT_CACHE_FILE)


def _stored_text(text: str) -> str | bytes:
    """A label or query as the cache stores it: as text, or, when it holds bytes that were not
    UTF-8 (typed in a terminal of another encoding, which Python keeps as lone surrogates), as
    bytes, since SQLite takes no such text. SQLite never finds bytes equal to text, so no label
    can be given another's embedding."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


class TextEncoder(Protocol):
    """A model's text side: its identity for the cache, and text to unit vectors."""

    spec: ModelSpec

    def encode_texts(self, texts: Sequence[str]) -> Embeddings: ...


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
