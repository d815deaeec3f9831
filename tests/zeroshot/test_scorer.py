"""Softmax over scaled cosines, best-first ranking and top-k."""

from __future__ import annotations

import numpy as np
import pytest

from clipcli.zeroshot.scorer import rank_labels, sigmoid, softmax


def unit(*vector):
    v = np.array(vector, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_softmax_survives_large_logits():
    probabilities = softmax(np.array([[1000.0, 999.0, -1000.0]]))
    assert np.isfinite(probabilities).all()
    assert probabilities[0, 0] == pytest.approx(1 / (1 + np.exp(-1)))


def test_best_label_is_the_most_similar_one():
    images = np.stack([unit(1, 0.1, 0), unit(0, 0, 1)])
    labels = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0.2, 1)])
    ranked = rank_labels(images, labels, ["x", "y", "z"], logit_scale=100.0)
    assert [p.label for p in ranked[0]] == ["x", "y", "z"]
    assert ranked[1][0].label == "z"
    assert ranked[0][0].similarity == pytest.approx(float(images[0] @ labels[0]), abs=1e-6)


def test_probabilities_use_the_logit_scale():
    images = np.stack([unit(1, 0)])
    labels = np.stack([unit(1, 0), unit(0, 1)])
    sharp = rank_labels(images, labels, ["a", "b"], logit_scale=100.0)[0][0].score
    soft = rank_labels(images, labels, ["a", "b"], logit_scale=1.0)[0][0].score
    assert sharp == pytest.approx(1 / (1 + np.exp(-100)))
    assert soft == pytest.approx(1 / (1 + np.exp(-1)))


def test_top_k_keeps_the_best_and_probabilities_of_the_full_softmax():
    images = np.stack([unit(1, 0.5, 0.2)])
    labels = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)])
    full = rank_labels(images, labels, ["a", "b", "c"], logit_scale=10.0)[0]
    top = rank_labels(images, labels, ["a", "b", "c"], logit_scale=10.0, top_k=1)[0]
    assert top == full[:1]
    assert sum(p.score for p in full) == pytest.approx(1.0)


def test_a_logit_bias_gives_each_label_its_sigmoid_whatever_the_other_labels():
    images = np.stack([unit(1, 0.5, 0.2)])
    labels = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)])
    three = rank_labels(images, labels, ["a", "b", "c"], logit_scale=10.0, logit_bias=-3.0)[0]
    two = rank_labels(images, labels[:2], ["a", "b"], logit_scale=10.0, logit_bias=-3.0)[0]
    for prediction in three:
        expected = 1 / (1 + np.exp(-(10.0 * prediction.similarity - 3.0)))
        assert prediction.sigmoid == pytest.approx(expected)
    assert [p.sigmoid for p in two] == [p.sigmoid for p in three[:2]]
    assert [p.score for p in two] != pytest.approx([p.score for p in three[:2]])


def test_without_a_logit_bias_there_is_no_sigmoid():
    images = np.stack([unit(1, 0)])
    labels = np.stack([unit(1, 0), unit(0, 1)])
    assert {p.sigmoid for p in rank_labels(images, labels, ["a", "b"], logit_scale=100.0)[0]} == {
        None
    }


def test_sigmoid_survives_large_logits():
    assert sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist() == [0.0, 0.5, 1.0]
