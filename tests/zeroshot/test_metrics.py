"""The scores as CLIP_benchmark defines them, on small cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from clipcli.zeroshot import metrics

# Four images of three classes; rows are the logits of classes 0, 1, 2.
LOGITS = np.array(
    [
        [0.9, 0.5, 0.1],  # class 0: right
        [0.2, 0.8, 0.7],  # class 1: right
        [0.6, 0.3, 0.5],  # class 2: taken for 0; second best is 2
        [0.1, 0.4, 0.2],  # class 2: taken for 1; 2 is second
    ]
)
TRUTH = np.array([0, 1, 2, 2])


def test_top_1_and_top_k_accuracy_count_the_true_class_among_the_first_k():
    ranked = metrics.ranked_classes(LOGITS)
    assert metrics.top_k_accuracy(ranked, TRUTH, 1) == 0.5
    assert metrics.top_k_accuracy(ranked, TRUTH, 2) == 1.0


def test_k_is_capped_at_the_number_of_classes():
    ranked = metrics.ranked_classes(LOGITS)
    assert metrics.top_k_accuracy(ranked, TRUTH, 5) == metrics.top_k_accuracy(ranked, TRUTH, 3)


def test_mean_per_class_recall_weighs_each_class_equally():
    """Balanced accuracy: classes 0 and 1 are all right, class 2 all wrong, so 2/3, whereas
    plain accuracy, which counts images, is 1/2."""
    predicted = metrics.ranked_classes(LOGITS)[:, 0]
    confusion = metrics.confusion_matrix(TRUTH, predicted, 3)
    assert confusion.tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]
    assert metrics.mean_per_class_recall(confusion) == pytest.approx(2 / 3, abs=1e-12)


def test_a_class_without_images_has_no_recall_to_average():
    confusion = np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0]])
    assert metrics.mean_per_class_recall(confusion) == pytest.approx((1.0 + 0.5) / 2)


def test_per_class_figures_give_support_recall_precision_and_the_usual_mistake():
    confusion = np.array([[3, 1, 0], [0, 2, 0], [2, 1, 0]])
    first, second, third = metrics.per_class(confusion)
    assert (first.support, first.recall, first.precision, first.confused_with) == (
        4,
        0.75,
        0.6,
        1,
    )
    assert (second.recall, second.precision, second.confused_with) == (1.0, 0.5, None)
    # Never predicted: precision 0 rather than a division by zero; taken for class 0 most.
    assert (third.recall, third.precision, third.confused_with) == (0.0, 0.0, 0)


def test_ties_rank_the_lower_class_first_as_classify_does():
    assert metrics.ranked_classes(np.array([[0.5, 0.5, 0.1]]))[0].tolist() == [0, 1, 2]
