"""From similarities to ranked predictions: CLIP's scaled-cosine softmax and top-k."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from clipcli.vectors import Embeddings


@dataclass(frozen=True)
class Prediction:
    """One label for one image: softmax probability over all labels, and the raw cosine."""

    label: str
    score: float
    similarity: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logit scales cannot overflow."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def rank_labels(
    image_embeddings: Embeddings,
    label_embeddings: Embeddings,
    labels: Sequence[str],
    logit_scale: float,
    top_k: int | None = None,
) -> list[list[Prediction]]:
    """Best-first predictions per image; probabilities are over all labels, even past top_k."""
    similarities = image_embeddings.astype(np.float64) @ label_embeddings.astype(np.float64).T
    probabilities = softmax(logit_scale * similarities)
    keep = len(labels) if top_k is None else max(1, min(top_k, len(labels)))
    ranked = []
    for sims, probs in zip(similarities, probabilities, strict=True):
        order = np.argsort(-sims, kind="stable")[:keep]
        ranked.append([Prediction(labels[i], float(probs[i]), float(sims[i])) for i in order])
    return ranked
