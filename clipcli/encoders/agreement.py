"""How closely a backend's embeddings follow the reference's: the figures the gate reads.

Plain cosine flatters an approximation. Embeddings of different inputs share a large common
component (mean cosine 0.90 between different images for random weights), and an error that
leaves that component alone still reads as cosine 0.999. So agreement is also measured on
centred embeddings (the reference's mean over the set taken away first) and on what a user
sees: which items a query ranks first, and which label each item gets.

All figures are the worst over the set, except `labels`, a share: one item's best label can
turn on a near-tie that no backend reproduces exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from clipcli.vectors import normalise

# What `auto` asks of a backend, on every figure (README "Precision and backends").
FLOORS = {"cosine": 0.999, "centred": 0.999, "top5": 0.8, "labels": 0.95}
TOP_K = 5
# A label the reference scores within this cosine of its best is a tie, not another answer:
# times CLIP's logit scale of 100 it moves a softmax by about 1%. Random weights score every
# caption alike, and a rounding of 4e-7 (prepacked weights or not) flipped such ties.
LABEL_TIE = 1e-4


@dataclass(frozen=True)
class Agreement:
    cosine: float  # lowest cosine to the reference
    centred: float  # lowest cosine once the reference's mean is taken from both
    top5: float  # lowest share of a query's first five items that the reference also ranks first
    labels: float  # share of items whose best query (zero-shot label) is the reference's

    def to_dict(self) -> dict[str, float]:
        return {name: round(value, 6) for name, value in asdict(self).items()}

    def shortfalls(self, floors: dict[str, float] = FLOORS) -> list[str]:
        return shortfalls(asdict(self), floors)


def measure(reference: np.ndarray, candidate: np.ndarray, queries: np.ndarray) -> Agreement:
    """How `candidate` embeddings of a set of items follow `reference` embeddings of the same
    items, ranked against `queries` (reference embeddings of texts, say): all [n, dim]."""
    reference, candidate, queries = (
        normalise(np.asarray(a)) for a in (reference, candidate, queries)
    )
    centre = reference.mean(axis=0)
    expected, found = reference @ queries.T, candidate @ queries.T
    return Agreement(
        cosine=lowest_cosine(reference, candidate),
        centred=lowest_cosine(reference - centre, candidate - centre),
        top5=_top_k_overlap(expected, found),
        labels=_same_labels(expected, found),
    )


def shortfalls(figures: dict[str, float], floors: dict[str, float] = FLOORS) -> list[str]:
    """Each recorded figure (Agreement.to_dict) below its floor, as `centred 0.9871 < 0.999`;
    empty when all hold. A figure missing falls short."""
    return [
        f"{name} {float(figures.get(name, 0.0)):.4f} < {floor}"
        for name, floor in floors.items()
        if float(figures.get(name, 0.0)) < floor
    ]


def passes(figures: dict[str, float], floors: dict[str, float] = FLOORS) -> bool:
    """Whether recorded figures (Agreement.to_dict) hold every floor; a figure missing fails."""
    return not shortfalls(figures, floors)


def lowest_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest cosine between matching rows of `a` and `b`."""
    return float(np.min(np.sum(normalise(a) * normalise(b), axis=1)))


def _same_labels(reference_scores: np.ndarray, candidate_scores: np.ndarray) -> float:
    """The share of items whose best query by the candidate is the reference's best, or ties
    with it by the reference's own scores (LABEL_TIE)."""
    chosen = np.argmax(candidate_scores, axis=1)
    given = reference_scores[np.arange(len(chosen)), chosen]
    return float(np.mean(given >= reference_scores.max(axis=1) - LABEL_TIE))


def _top_k_overlap(reference_scores: np.ndarray, candidate_scores: np.ndarray) -> float:
    """Scores are [items, queries]; per query, the overlap of the two top-k sets of items."""
    k = min(TOP_K, reference_scores.shape[0] - 1)
    if k < 1:
        return 1.0
    # Stable sorts: tied items keep their order, as the index breaks ties by id.
    first = np.argsort(-reference_scores, axis=0, kind="stable")[:k]
    second = np.argsort(-candidate_scores, axis=0, kind="stable")[:k]
    shared = [len(set(first[:, q]) & set(second[:, q])) for q in range(first.shape[1])]
    return min(shared) / k
