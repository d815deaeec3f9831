"""Calibrated thresholds: each label's lowest cosine whose predictions reach the precision asked
for, and the file that carries them with the model, templates and labels they hold for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipcli.errors import EXIT_USAGE, UsageError
from clipcli.zeroshot.floors import MinScore, best_cleared, cleared
from clipcli.zeroshot.scorer import Prediction
from clipcli.zeroshot.thresholds import (
    LabelThreshold,
    RecordedModel,
    Thresholds,
    calibrate,
    read_thresholds,
    write_thresholds,
)


def one_label(cosines: list[float], right: list[bool], target: float) -> LabelThreshold:
    """Calibrate label 0 of two, on images whose truth is label 0 where `right` says so."""
    similarities = np.array([[c, 0.0] for c in cosines])
    truth = np.array([0 if r else 1 for r in right])
    return calibrate(similarities, truth, ["cat", "dog"], target)[0]


def test_the_threshold_is_the_lowest_cosine_that_keeps_the_target_precision():
    # ranked: right, right, wrong, right, right, wrong, right
    found = one_label(
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [True, True, False, True, True, False, True], 0.8
    )
    assert found.threshold == pytest.approx(0.5)  # 4 of 5 right; at 0.3, 5 of 7
    assert found.precision == pytest.approx(0.8)
    assert found.recall == pytest.approx(4 / 5)
    assert found.support == 5


def test_a_threshold_never_sits_on_a_wrong_answer():
    # at 0.6 precision is 3/4 >= 0.75, but 0.6 adds only a wrong answer to the cut at 0.7
    found = one_label([0.9, 0.8, 0.7, 0.6, 0.1], [True, True, True, False, False], 0.75)
    assert found.threshold == pytest.approx(0.7)
    assert found.precision == 1.0


def test_images_tied_at_one_cosine_are_given_the_label_together():
    # the two at 0.5 (one right, one wrong) cannot be split: with them, precision is 3/4
    found = one_label([0.9, 0.8, 0.5, 0.5], [True, True, True, False], 0.9)
    assert found.threshold == pytest.approx(0.8)
    assert found.recall == pytest.approx(2 / 3)


def test_a_label_no_cosine_makes_precise_enough_gets_no_threshold():
    found = one_label([0.9, 0.8, 0.7], [False, True, False], 0.9)
    assert (found.threshold, found.precision, found.recall) == (None, None, 0.0)


def test_each_label_is_calibrated_on_its_own_column():
    similarities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    truth = np.array([0, 1, 1])
    found = calibrate(similarities, truth, ["cat", "dog"], 1.0)
    assert [(t.label, t.threshold, t.support) for t in found] == [
        ("cat", pytest.approx(0.9), 1),
        ("dog", pytest.approx(0.7), 2),
    ]


def thresholds(**floors: float | None) -> Thresholds:
    return Thresholds(
        model=RecordedModel("clipcli-shapes", "/x.pt", "sha256:1", "clipcli-shapes|sha256:1", "s"),
        templates="default",
        templates_digest="abc",
        precision_target=0.9,
        dataset="/data",
        per_label=tuple(
            LabelThreshold(label, floor, None if floor is None else 1.0, 1.0, 3)
            for label, floor in floors.items()
        ),
    )


def test_the_file_reads_back_what_was_written(tmp_path: Path):
    written = thresholds(cat=0.25, dog=None)
    write_thresholds(tmp_path / "t.json", written)
    assert read_thresholds(tmp_path / "t.json") == written
    assert written.floor("cat") == 0.25 and written.floor("dog") is None
    assert written.unreachable() == ["dog"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "cannot read thresholds"),
        ('{"format": "something else"}', "not a thresholds file"),
        ('{"format": "clipcli-thresholds", "version": 99}', "format version 99"),
        ('{"format": "clipcli-thresholds", "version": 1}', "damaged thresholds file"),
    ],
)
def test_a_file_that_is_not_thresholds_is_a_usage_error(tmp_path: Path, content, reason):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(UsageError) as raised:
        read_thresholds(path)
    assert str(path) in raised.value.message and reason in raised.value.message
    assert raised.value.exit_code == EXIT_USAGE


def test_a_damaged_threshold_value_is_refused(tmp_path: Path):
    write_thresholds(tmp_path / "t.json", thresholds(cat=0.25))
    data = json.loads((tmp_path / "t.json").read_text())
    data["labels"][0]["threshold"] = "high"
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match="damaged"):
        read_thresholds(tmp_path / "t.json")


def prediction(label: str, similarity: float) -> Prediction:
    return Prediction(label, 0.5, similarity)


def test_multi_label_gives_every_label_over_its_own_floor_best_first():
    floors = thresholds(cat=0.3, dog=0.2, bird=None)
    given = cleared(
        [prediction("cat", 0.25), prediction("dog", 0.21), prediction("bird", 0.9)], floors
    )
    assert [p.label for p in given] == ["dog"]  # cat below its floor; bird never given
    both = cleared([prediction("dog", 0.4), prediction("cat", 0.5)], MinScore(0.3))
    assert [p.label for p in both] == ["cat", "dog"]


def test_single_label_gives_the_best_label_only_if_it_clears():
    ranked = [prediction("cat", 0.5), prediction("dog", 0.4)]
    assert best_cleared(ranked, None).label == "cat"
    assert best_cleared(ranked, thresholds(cat=0.6, dog=0.1)) is None  # dog does not stand in
    assert best_cleared(ranked, MinScore(0.45)).label == "cat"
