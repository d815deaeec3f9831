"""Acting on predictions: the cosine a label must reach to be given, and the labels that reach it.

A softmax always names some label, however unlike the image every label is; a floor on the
cosine is what lets an image be "none of these". The floor is one number for every label
(`--min-score`) or one per label, calibrated on labelled photos (thresholds.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from clipcli.zeroshot.scorer import Prediction


class Floors(Protocol):
    """The lowest cosine at which each label is given; None: the label is never given (no
    cosine reached the precision asked for when it was calibrated)."""

    def floor(self, label: str) -> float | None: ...


@dataclass(frozen=True)
class MinScore:
    """One floor for every label."""

    value: float

    def floor(self, label: str) -> float | None:
        return self.value


def clears(prediction: Prediction, floors: Floors) -> bool:
    """Whether a prediction's cosine reaches its label's floor."""
    floor = floors.floor(prediction.label)
    return floor is not None and prediction.similarity >= floor


def cleared(predictions: Sequence[Prediction], floors: Floors) -> list[Prediction]:
    """Every prediction that clears its floor, best first (by cosine): the labels of a
    multi-label answer, empty when the image is none of them."""
    kept = [prediction for prediction in predictions if clears(prediction, floors)]
    return sorted(kept, key=lambda prediction: -prediction.similarity)


def best_cleared(predictions: Sequence[Prediction], floors: Floors | None) -> Prediction | None:
    """The single best label, if it clears its floor (always, with no floor); None when the
    image is none of the labels. Only the best label is weighed: a runner-up that clears its
    own, lower, floor does not stand in for it."""
    if not predictions:
        return None
    best = max(predictions, key=lambda prediction: prediction.similarity)
    return best if floors is None or clears(best, floors) else None
