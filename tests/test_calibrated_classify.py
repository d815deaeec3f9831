"""Acting on classification: `eval --thresholds` calibrates a cosine floor per label, and
`classify --multi` gives every label that clears its floor, or abstains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TEST_MODEL

from clipcli.errors import EXIT_USAGE
from clipcli.shapes import SHAPES, write_labelled_folder

SHAPES_MODEL = ["--model", TEST_MODEL]


@pytest.fixture(scope="module")
def calibration_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calibration") / "shapes"
    write_labelled_folder(root, 12, seed=21)
    return root


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fresh drawings the thresholds never saw."""
    root = tmp_path_factory.mktemp("held-out") / "shapes"
    write_labelled_folder(root, 12, seed=22)
    return root


@pytest.fixture(scope="module")
def thresholds_file(calibration_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import Cli

    out = tmp_path_factory.mktemp("thresholds") / "shapes.json"
    result = Cli()("eval", calibration_set, *SHAPES_MODEL, "--thresholds", out)
    assert result.exit_code == 0, result.stderr
    return out


def test_the_file_records_model_templates_labels_and_each_labels_threshold(thresholds_file):
    data = json.loads(thresholds_file.read_text())
    assert data["model"]["described"] == TEST_MODEL
    assert data["templates"] == "default" and data["precision_target"] == 0.9
    assert sorted(entry["label"] for entry in data["labels"]) == sorted(SHAPES)
    for entry in data["labels"]:
        assert -1 < entry["threshold"] < 1
        assert entry["precision"] >= 0.9 and 0 < entry["recall"] <= 1 and entry["support"] == 12


def test_thresholds_keep_their_precision_on_drawings_they_never_saw(
    cli, held_out: Path, thresholds_file: Path
):
    result, answers = cli.json("classify", held_out, "--multi", "--thresholds", thresholds_file)
    assert result.exit_code == 0, result.stderr
    assert len(answers) == 12 * len(SHAPES)
    for label in SHAPES:
        given = [Path(a["path"]).parent.name for a in answers if label in a["labels"]]
        assert given, f"{label} was never given"
        precision = given.count(label) / len(given)
        assert precision >= 0.9, (label, precision)


def test_multi_lists_the_labels_given_and_abstains_when_none_clears(cli, held_out: Path):
    circle = sorted((held_out / "circle").iterdir())[0]
    result, answers = cli.json(
        "classify", circle, *SHAPES_MODEL, "--labels", ",".join(SHAPES), "--multi",
        "--min-score", "0.3",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (answer,) = answers
    assert answer["labels"][0] == "circle" and answer["abstain"] is False
    assert answer["labels"] == [p["label"] for p in answer["predictions"]]
    assert all(p["similarity"] >= 0.3 for p in answer["predictions"])
    result, answers = cli.json(
        "classify", circle, *SHAPES_MODEL, "--labels", "circle,star", "--multi",
        "--min-score", "0.99",
    )  # fmt: skip
    assert answers == [{"path": str(circle), "predictions": [], "labels": [], "abstain": True}]


def test_an_abstaining_image_still_has_its_line_in_plain_output(cli, held_out: Path):
    circle = sorted((held_out / "circle").iterdir())[0]
    result = cli(
        "classify", circle, *SHAPES_MODEL, "--labels", "star,cross", "--multi",
        "--min-score", "0.99", "--format", "plain",
    )  # fmt: skip
    assert result.stdout == f"{circle}\t\t\n"


def test_without_multi_the_json_keeps_its_single_label_shape(cli, held_out: Path):
    circle = sorted((held_out / "circle").iterdir())[0]
    _, answers = cli.json("classify", circle, *SHAPES_MODEL, "--labels", "circle,star")
    assert set(answers[0]) == {"path", "predictions"}


def test_the_thresholds_file_supplies_labels_templates_and_model(cli, held_out, thresholds_file):
    star = sorted((held_out / "star").iterdir())[0]
    result, answers = cli.json("classify", star, "--multi", "--thresholds", thresholds_file)
    assert result.exit_code == 0, result.stderr
    assert answers[0]["labels"][:1] == ["star"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--labels", "circle,star"], "calibrated for other labels (left out: "),
        (["--labels", ",".join([*SHAPES, "heart"])], "not calibrated: heart"),
        (["--templates", "imagenet"], "calibrated with templates default, not imagenet"),
        (["--model", "ViT-B-32"], f"calibrated with {TEST_MODEL}, not ViT-B-32"),
        (["--min-score", "0.2"], "--thresholds and --min-score both set a floor"),
    ],
)
def test_thresholds_are_refused_for_what_they_were_not_calibrated_for(
    cli, held_out, thresholds_file, extra, message
):
    star = sorted((held_out / "star").iterdir())[0]
    result = cli("classify", star, "--multi", "--thresholds", thresholds_file, *extra)
    assert result.exit_code == EXIT_USAGE
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-score", "0.3"], "--min-score sets the floor of --multi; add --multi"),
        (["--multi"], "--multi gives the labels that clear a floor"),
    ],
)
def test_multi_and_its_floor_come_together(cli, held_out, args, message):
    star = sorted((held_out / "star").iterdir())[0]
    result = cli("classify", star, *SHAPES_MODEL, "--labels", "star,circle", *args)
    assert result.exit_code == EXIT_USAGE and message in result.stderr


def test_a_thresholds_file_that_is_not_one_is_refused(cli, held_out, tmp_path):
    star = sorted((held_out / "star").iterdir())[0]
    bogus = tmp_path / "t.json"
    bogus.write_text("[1, 2]")
    result = cli("classify", star, "--multi", "--thresholds", bogus)
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.startswith(f"error: {bogus}: not a thresholds file")


def test_eval_json_carries_the_thresholds_of_the_set_they_came_from(cli, calibration_set, tmp_path):
    out = tmp_path / "t.json"
    result, data = cli.json(
        "eval", calibration_set, *SHAPES_MODEL, "--templates", "imagenet", "--templates",
        "default", "--thresholds", out, "--precision-target", "0.95",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    calibrated = json.loads(out.read_text())
    assert calibrated["precision_target"] == 0.95
    (carrier,) = [entry for entry in data if "thresholds" in entry]
    assert carrier["templates"] == calibrated["templates"]
    assert carrier["thresholds"] == calibrated["labels"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision-target", "0.9"], "--precision-target sets the thresholds' precision"),
        (["--thresholds", "{out}", "--precision-target", "1.5"], "at most 1, not 1.5"),
        (["--thresholds", "{folder}/t.txt"], "the file name must end in .json"),
    ],
)
def test_eval_refuses_thresholds_it_cannot_make(cli, calibration_set, tmp_path, args, message):
    args = [a.format(out=tmp_path / "t.json", folder=tmp_path) for a in args]
    result = cli("eval", calibration_set, *SHAPES_MODEL, *args)
    assert result.exit_code == EXIT_USAGE and message in result.stderr
    assert not (tmp_path / "t.json").exists()
