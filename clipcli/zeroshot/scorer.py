"""From similarities to ranked predictions: CLIP's scaled-cosine softmax and top-k, and the
per-label sigmoid of models trained with one (SigLIP's loss)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from clipcli.vectors import Embeddings


@dataclass(frozen=True)
class Prediction:
    """One label for one image: softmax probability over all labels, and the raw cosine; for
    a model trained with a sigmoid loss, also the probability it gives the label on its own."""

    label: str
    score: float
    similarity: float
    sigmoid: float | None = None


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
    logit_bias: float | None = None,
) -> list[list[Prediction]]:
    """Best-first predictions per image; probabilities are over all labels, even past top_k.

    With a `logit_bias` (the model was trained with a sigmoid loss) each prediction also
    carries sigmoid(logit_scale * cosine + logit_bias): the label's probability on its own, as
    that training defines it, which does not depend on the other labels given.
    """
    similarities = image_embeddings.astype(np.float64) @ label_embeddings.astype(np.float64).T
    probabilities = softmax(logit_scale * similarities)
    sigmoids = None if logit_bias is None else sigmoid(logit_scale * similarities + logit_bias)
    keep = len(labels) if top_k is None else max(1, min(top_k, len(labels)))
    ranked = []
    for row, (sims, probs) in enumerate(zip(similarities, probabilities, strict=True)):
        order = np.argsort(-sims, kind="stable")[:keep]
        ranked.append(
            [
                Prediction(
                    labels[i],
                    float(probs[i]),
                    float(sims[i]),
                    None if sigmoids is None else float(sigmoids[row, i]),
                )
                for i in order
            ]
        )
    return ranked


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function, computed without overflow for logits of either sign."""
    return np.exp(-np.logaddexp(0.0, -logits))
