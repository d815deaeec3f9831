"""Zero-shot classification of image files against a list of labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from clipcli.encoders.batching import embed_files
from clipcli.encoders.choose import full_model, load_encoder, load_image_encoder, requested_spec
from clipcli.encoders.protocols import ImageEncoder
from clipcli.media.decode import ImageDecodeError
from clipcli.media.discover import expand_paths
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.settings import precision_choice
from clipcli.store.text_cache import TextEmbeddingCache
from clipcli.zeroshot.floors import Floors, cleared
from clipcli.zeroshot.labels import LabelText, label_embeddings
from clipcli.zeroshot.scorer import Prediction, rank_labels
from clipcli.zeroshot.templates import TemplateSet

NO_IMAGES = "no images found"


@dataclass(frozen=True)
class Classification:
    """The predictions for one input path, or why there are none: an `error` for an image
    that cannot be read, a `warning` for a folder that holds no images. A multi-label answer
    also has the `labels` given and whether the image `abstain`s (is none of them)."""

    path: str
    predictions: list[Prediction] | None = None
    error: str | None = None
    warning: str | None = None
    labels: list[str] | None = None  # multi-label answers only
    abstain: bool | None = None  # multi-label answers only


def classify_paths(
    paths: Sequence[Path],
    labels: Sequence[str],
    templates: TemplateSet,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    batch_size: int = 32,
    top_k: int | None = None,
    progress: ProgressReporter | None = None,
) -> list[Classification]:
    """Classify files and folders (expanded, sorted); results come back in input order,
    followed by a warning entry for each folder that holds no images."""
    chosen = precision_choice(precision)
    files, empty = _expand(paths)
    notes = [Classification(str(folder), warning=NO_IMAGES) for folder in empty]
    if not files:
        return notes  # nothing to classify, so no model to load
    progress = progress or NoProgress()
    spec = requested_spec(model, pretrained)
    with TextEmbeddingCache.default() as cache:
        progress.phase("Loading model", 1)  # the first run of a model also prepares its fast path
        # Labels that are not cached need the whole model: then its image side is loaded with
        # it (torch's start-up is paid anyway), instead of an exported tower beside it.
        if cache.missing(spec.fingerprint, templates.digest, labels):
            encoder: ImageEncoder = load_encoder(spec, device, chosen, progress, len(files), files)
        else:
            encoder = load_image_encoder(spec, device, chosen, progress, len(files), files)
        progress.advance(1)
        text_side = LabelText(spec, device, chosen, full_model(encoder, spec, device, chosen))
        text = label_embeddings(text_side, labels, templates, cache, progress)
    results: dict[Path, Classification] = {}
    progress.phase("Classifying", len(files))
    for batch in embed_files(encoder, files, batch_size):
        progress.advance(len(batch.paths) + len(batch.failures))
        ranked = rank_labels(
            batch.embeddings, text, labels, encoder.logit_scale, top_k, encoder.logit_bias
        )
        for path, predictions in zip(batch.paths, ranked, strict=True):
            results[path] = Classification(str(path), predictions)
        for failure in batch.failures:
            results[failure.path] = Classification(str(failure.path), error=failure.reason)
    return [results[path] for path in files] + notes


def multi_labelled(
    results: Sequence[Classification], floors: Floors, top_k: int | None = None
) -> list[Classification]:
    """Multi-label answers: every label whose cosine clears its floor, best first (at most
    `top_k`); an image that clears none abstains, with no predictions."""
    answers = []
    for result in results:
        if result.predictions is None:
            answers.append(result)
            continue
        given = cleared(result.predictions, floors)[:top_k]
        labels = [prediction.label for prediction in given]
        answers.append(replace(result, predictions=given, labels=labels, abstain=not given))
    return answers


def _expand(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """The image paths to classify, and the folders among `paths` that hold no images.

    Each path is expanded on its own, so that a folder whose images were already listed
    through another path (`photos photos/nested`) is not taken for an empty one.
    """
    groups = [expand_paths([path]) for path in paths]
    files = expand_paths([file for group in groups for file in group])  # each file once
    return files, [path for path, group in zip(paths, groups, strict=True) if not group]


def label_warnings(labels: Sequence[str]) -> list[str]:
    """What the user should hear about the labels themselves, one line each."""
    if len(labels) == 1:  # a softmax over one label is 1 whatever the image
        return ["only one label: every image scores 100%; give two or more"]
    return []


def failed(results: Sequence[Classification]) -> bool:
    """Whether any input path gave no predictions: an unreadable image, or a folder of none."""
    return any(result.predictions is None for result in results)


__all__ = [
    "NO_IMAGES",
    "Classification",
    "ImageDecodeError",
    "classify_paths",
    "failed",
    "label_warnings",
    "multi_labelled",
]
