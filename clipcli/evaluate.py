"""Zero-shot accuracy on a labelled image folder, scored as CLIP_benchmark scores it."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipcli.encoders.choose import requested_spec
from clipcli.errors import ClipcliError, IndexBusyError, UsageError
from clipcli.index import Skipped as IndexSkipped
from clipcli.index import update_index
from clipcli.models.names import ModelSpec
from clipcli.progress import NoProgress, ProgressReporter
from clipcli.settings import precision_choice
from clipcli.store import eval_cache
from clipcli.store.catalog import Catalog
from clipcli.store.text_cache import TextEmbeddingCache
from clipcli.vectors import Embeddings
from clipcli.zeroshot import metrics
from clipcli.zeroshot.dataset import ImageFolder, LabelledImage, read_image_folder
from clipcli.zeroshot.labels import LabelText, label_embeddings
from clipcli.zeroshot.scorer import softmax
from clipcli.zeroshot.templates import TemplateSet
from clipcli.zeroshot.thresholds import Thresholds, calibrate, checked_target, model_record


@dataclass(frozen=True)
class ClassScore:
    """How one class fared: its images (support), the share of them labelled right (recall),
    the share of its predictions that were right (precision), and the class its images were
    most often taken for (None when none was mistaken)."""

    label: str
    support: int
    recall: float
    precision: float
    confused_with: str | None


@dataclass(frozen=True)
class Mistake:
    """An image given the wrong label, and the probability the model gave that label."""

    path: str
    true_label: str
    predicted_label: str
    score: float


@dataclass(frozen=True)
class TemplateScore:
    """The scores of one template set on the dataset's images."""

    templates: str
    acc1: float
    acc5: float
    top_k: int  # the k of acc5: --top-k, capped at the class count
    mean_per_class_recall: float
    per_class: list[ClassScore]
    confusion: list[list[int]]  # rows: true class, columns: predicted; sorted folder order
    mistakes: list[Mistake]  # the most confident first


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class EvalReport:
    """One `clipcli eval` run: its fields are the --json contract."""

    dataset: str
    model: str
    labels: list[str]  # one per class, in sorted folder order
    images: int
    skipped: list[Skipped] = field(default_factory=list)
    scores: list[TemplateScore] = field(default_factory=list)  # in the order asked for
    seconds: float = 0.0
    embedded: int = 0  # images embedded by this run; the rest came from the cache
    empty_classes: list[str] = field(default_factory=list)  # class folders with no images
    # With a precision target: per-label thresholds, from the best template set's cosines.
    thresholds: Thresholds | None = None

    def best_first(self) -> list[TemplateScore]:
        """The template sets, best first: by acc1, then mean per-class recall, then acc5."""
        return sorted(self.scores, key=lambda s: (-s.acc1, -s.mean_per_class_recall, -s.acc5))


def evaluate_dataset(
    dataset: Path,
    template_sets: Sequence[tuple[str, TemplateSet]],
    *,
    classnames: Path | None = None,
    top_k: int = 5,
    model: str | None = None,
    pretrained: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    batch_size: int = 32,
    progress: ProgressReporter | None = None,
    precision_target: float | None = None,
) -> EvalReport:
    """Score zero-shot classification of the images under `dataset` with each template set.

    The images are embedded once per run, through the backends and the incremental catalog
    that `clipcli index` uses, kept in the cache per dataset and model: another run on the same
    folder (other templates, say) embeds only the images that changed. Labels are embedded, and
    cached, exactly as classify embeds them.
    """
    started = time.perf_counter()
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, not {top_k}")
    if not template_sets:
        raise UsageError("no template sets given")
    if precision_target is not None:
        checked_target(precision_target)
    chosen = precision_choice(precision)
    data = read_image_folder(dataset, classnames)
    progress = progress or NoProgress()
    spec = requested_spec(model, pretrained)
    folder = eval_cache.folder_for(data.root, spec.fingerprint, device, chosen)
    try:
        indexed = update_index(
            [data.root / name for name in data.folders],
            folder,
            model=model,
            pretrained=pretrained,
            device=device,
            precision=chosen,
            batch_size=batch_size,
            progress=progress,
            embeddings_only=True,
        )
    except IndexBusyError:
        raise IndexBusyError(
            f"{dataset}: another `clipcli eval` is embedding this folder's images",
            hint="wait for it to finish, then run again",
        ) from None
    vectors, labelled, missing = _embedded(folder, data)
    truth = np.array([image.label for image in labelled], dtype=np.int64)
    text = LabelText(spec, device, chosen)
    scale = _ScaleLookup(spec, folder, text)
    report = EvalReport(
        dataset=str(dataset),
        model=spec.describe(),
        labels=list(data.labels),
        images=len(labelled),
        skipped=_skipped(indexed.skipped, missing, data),
        embedded=indexed.added + indexed.updated,
        empty_classes=list(data.empty),
    )
    cosines: dict[str, np.ndarray] = {}
    with TextEmbeddingCache.default() as cache:
        for name, templates in template_sets:
            classes = label_embeddings(text, data.labels, templates, cache, progress)
            cosines[name] = vectors.astype(np.float64) @ classes.astype(np.float64).T
            report.scores.append(
                _score(name, cosines[name], truth, labelled, data.labels, top_k, scale)
            )
    if precision_target is not None:
        best = report.best_first()[0].templates
        report.thresholds = Thresholds(
            model=model_record(spec),
            templates=best,
            templates_digest=dict(template_sets)[best].digest,
            precision_target=precision_target,
            dataset=os.path.abspath(dataset),
            per_label=tuple(calibrate(cosines[best], truth, data.labels, precision_target)),
        )
    eval_cache.write_state(folder, {"dataset": os.path.abspath(dataset), **scale.noted()})
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _embedded(
    folder: Path, data: ImageFolder
) -> tuple[Embeddings, list[LabelledImage], list[LabelledImage]]:
    """The vectors of the dataset's images, in image order; the images that have one; and
    those that have none (unreadable, or gone since the folder was read)."""
    with Catalog(folder, read_only=True) as catalog:
        entries = catalog.entries()
        ids, vectors = catalog.vectors()
    row = {int(id_): index for index, id_ in enumerate(ids)}
    labelled, missing, rows = [], [], []
    for image in data.images:
        entry = entries.get(str(image.path))
        if entry is None:
            missing.append(image)
            continue
        labelled.append(image)
        rows.append(row[entry.id])
    if not rows:
        raise ClipcliError(
            f"{data.root}: none of its images could be read", hint="see the skipped files above"
        )
    return vectors[rows], labelled, missing


def _skipped(
    unreadable: Sequence[IndexSkipped], missing: Sequence[LabelledImage], data: ImageFolder
) -> list[Skipped]:
    reasons = {item.path: item.reason for item in unreadable}
    skipped = [
        Skipped(str(image.path), reasons.get(str(image.path), "vanished while it was read"))
        for image in missing
    ]
    skipped += [Skipped(str(path), "not in a class folder") for path in data.outside]
    return sorted(skipped, key=lambda item: item.path)


def _score(
    name: str,
    logits: np.ndarray,
    truth: np.ndarray,
    images: Sequence[LabelledImage],
    labels: Sequence[str],
    top_k: int,
    scale: _ScaleLookup,
) -> TemplateScore:
    ranked = metrics.ranked_classes(logits)
    predicted = ranked[:, 0]
    confusion = metrics.confusion_matrix(truth, predicted, len(labels))
    k = min(top_k, len(labels))
    figures = metrics.per_class(confusion)
    wrong = np.flatnonzero(predicted != truth)
    mistakes: list[Mistake] = []
    if len(wrong):
        probabilities = softmax(scale.value() * logits[wrong])
        mistakes = [
            Mistake(
                str(images[i].path),
                labels[truth[i]],
                labels[predicted[i]],
                float(probabilities[row, predicted[i]]),
            )
            for row, i in enumerate(wrong)
        ]
        mistakes.sort(key=lambda mistake: -mistake.score)  # stable: ties stay in path order
    return TemplateScore(
        templates=name,
        acc1=metrics.top_k_accuracy(ranked, truth, 1),
        acc5=metrics.top_k_accuracy(ranked, truth, k),
        top_k=k,
        mean_per_class_recall=metrics.mean_per_class_recall(confusion),
        per_class=[
            ClassScore(
                label,
                figure.support,
                figure.recall,
                figure.precision,
                None if figure.confused_with is None else labels[figure.confused_with],
            )
            for label, figure in zip(labels, figures, strict=True)
        ],
        confusion=confusion.tolist(),
        mistakes=mistakes,
    )


@dataclass
class _ScaleLookup:
    """The model's logit scale, for the probabilities of wrong answers: from the export, else
    from what an earlier run of this cache found, else from the model itself (loaded once)."""

    spec: ModelSpec
    folder: Path
    text: LabelText
    found: float | None = None

    def value(self) -> float:
        if self.found is None:
            self.found = self._recorded() or self.text.loaded().logit_scale
        return self.found

    def _recorded(self) -> float | None:
        from clipcli.encoders.export_cache import ExportFolder

        for meta in (
            ExportFolder.for_spec(self.spec).read_meta(),
            eval_cache.read_state(self.folder),
        ):
            if isinstance(meta.get("logit_scale"), (int, float)):
                return float(meta["logit_scale"])
        return None

    def noted(self) -> dict[str, float]:
        """The scale for the next run's state note, when this run found it."""
        found = self.found if self.found is not None else self._recorded()
        return {} if found is None else {"logit_scale": found}
