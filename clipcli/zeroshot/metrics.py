"""Zero-shot classification scores, defined as CLIP_benchmark defines them.

- acc@k: the share of images whose true class is among the k best-scored classes;
- mean per-class recall: the mean over classes (those with images) of the share of each class's
  images predicted as that class, i.e. scikit-learn's balanced accuracy of the top-1 answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassFigures:
    support: int
    recall: float
    precision: float
    confused_with: int | None  # the class this one's images were most often taken for


def ranked_classes(logits: np.ndarray) -> np.ndarray:
    """Per row, the class indices best first; ties keep the lower index first, as classify's
    ranking does."""
    return np.argsort(-logits, axis=1, kind="stable")


def top_k_accuracy(ranked: np.ndarray, truth: np.ndarray, k: int) -> float:
    """The share of rows whose true class is among their first k (k capped at the class count)."""
    if len(truth) == 0:
        return 0.0
    k = max(1, min(k, ranked.shape[1]))
    hits = (ranked[:, :k] == truth[:, None]).any(axis=1)
    return float(hits.sum()) / len(truth)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def mean_per_class_recall(confusion: np.ndarray) -> float:
    """The mean recall of the classes that have images (a class with none has no recall)."""
    support = confusion.sum(axis=1)
    present = support > 0
    if not present.any():
        return 0.0
    recalls = np.diag(confusion)[present] / support[present]
    return float(recalls.mean())


def per_class(confusion: np.ndarray) -> list[ClassFigures]:
    """Support, recall, precision (0 where a class was never predicted) and the most common
    wrong answer of each class; ties between wrong answers go to the lower class index."""
    figures = []
    for index, row in enumerate(confusion):
        support = int(row.sum())
        predicted = int(confusion[:, index].sum())
        right = int(row[index])
        wrong = row.copy()
        wrong[index] = 0
        figures.append(
            ClassFigures(
                support=support,
                recall=right / support if support else 0.0,
                precision=right / predicted if predicted else 0.0,
                confused_with=int(np.argmax(wrong)) if wrong.any() else None,
            )
        )
    return figures
