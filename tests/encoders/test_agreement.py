"""The gate's figures: what plain cosine hides, centred cosine and the rankings show."""

from __future__ import annotations

import numpy as np

from clipcli.encoders.agreement import FLOORS, measure, passes
from clipcli.vectors import normalise


def alike(rng: np.random.Generator, items: int = 24, dim: int = 64) -> np.ndarray:
    """Embeddings as random weights give them: a large shared direction, small differences."""
    shared = rng.standard_normal(dim)
    return normalise(
        3.0 * shared / np.linalg.norm(shared) + 0.1 * rng.standard_normal((items, dim))
    )


def test_an_exact_copy_agrees_on_every_figure():
    rng = np.random.default_rng(0)
    items, queries = alike(rng), normalise(rng.standard_normal((10, 64)))
    figures = measure(items, items.copy(), queries)
    assert figures.to_dict() == {"cosine": 1.0, "centred": 1.0, "top5": 1.0, "labels": 1.0}
    assert passes(figures.to_dict()) and figures.shortfalls() == []


def test_an_error_hidden_by_the_shared_direction_fails_centred_cosine():
    rng = np.random.default_rng(1)
    reference = alike(rng)
    candidate = normalise(reference + 0.004 * rng.standard_normal(reference.shape))
    figures = measure(reference, candidate, reference[:5])
    assert figures.cosine > FLOORS["cosine"]  # plain cosine would let it through
    assert figures.centred < FLOORS["centred"]
    assert f"centred {figures.centred:.4f} < {FLOORS['centred']}" in figures.shortfalls()
    assert not any(line.startswith("cosine") for line in figures.shortfalls())
    assert not passes(figures.to_dict())


def along_first_axis(scores: list[float]) -> np.ndarray:
    """Unit vectors whose first coordinate is each score: their cosine with the query e0."""
    rows = np.zeros((len(scores), len(scores) + 1), dtype=np.float32)
    for i, score in enumerate(scores):
        rows[i, 0], rows[i, i + 1] = score, np.sqrt(1 - score**2)
    return rows


def test_top5_counts_a_stranger_among_a_querys_first_five():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    query = np.eye(1, len(scores) + 1, dtype=np.float32)
    promoted = along_first_axis(scores[:-1] + [0.95])  # the last item jumps to first
    assert measure(along_first_axis(scores), promoted, query).top5 == 0.8


def test_labels_is_the_share_of_items_whose_best_query_stays():
    reference = np.eye(8, dtype=np.float32)
    swapped = reference[[1, 0, 2, 3, 4, 5, 6, 7]]  # items 0 and 1 answer each other's query
    assert measure(reference, swapped, np.eye(8, dtype=np.float32)).labels == 0.75


def test_a_missing_figure_fails_the_gate():
    assert not passes({"cosine": 1.0, "centred": 1.0, "top5": 1.0})


def test_a_label_the_reference_scores_as_a_tie_is_not_another_answer():
    queries = np.eye(3, dtype=np.float32)
    reference = normalise(np.array([[1.0, 1.0 - 5e-5, 0.0], [1.0, 0.5, 0.1]], dtype=np.float32))
    swapped = normalise(np.array([[1.0 - 5e-5, 1.0, 0.0], [0.5, 1.0, 0.1]], dtype=np.float32))
    # the first item's two best labels tie by the reference's scores; the second's do not
    assert measure(reference, swapped, queries).labels == 0.5
