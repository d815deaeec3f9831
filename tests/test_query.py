"""Search queries as arithmetic: terms added and subtracted, weighted, example images towards and
away, and a score floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_MODEL

from clipcli.encoders import text_tower
from clipcli.encoders.choose import requested_spec
from clipcli.errors import UsageError
from clipcli.query import Query, Term, parse_terms, query_vector
from clipcli.shapes import write_sample_folder


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("beach + sunset - people", [("beach", 1), ("sunset", 1), ("people", -1)]),
        ("2*dog + snow", [("dog", 2), ("snow", 1)]),
        ("0.5 * a cat - 1.5*a dog", [("a cat", 0.5), ("a dog", -1.5)]),
        ("- people + beach", [("people", -1), ("beach", 1)]),
        ("a black-and-white photo", [("a black-and-white photo", 1)]),
        ("C++ code, 1+1", [("C++ code, 1+1", 1)]),
        ("  a horse  ", [("a horse", 1)]),
    ],
)
def test_terms_are_joined_by_plus_and_minus_with_spaces_around(text, terms):
    assert parse_terms(text) == [Term(phrase, float(weight)) for phrase, weight in terms]


def test_literal_keeps_the_whole_query_as_one_phrase():
    assert parse_terms("beach + sunset - people", literal=True) == [
        Term("beach + sunset - people", 1.0)
    ]


@pytest.mark.parametrize("text", ["beach +  ", "beach + - sunset", "sunset - 2*"])
def test_an_operator_with_no_term_after_it_is_a_usage_error_naming_the_query(text):
    with pytest.raises(UsageError, match="with no term after it") as refused:
        parse_terms(text)
    assert text.strip() in refused.value.message


def test_only_white_space_is_no_term():
    assert parse_terms(" \t ") == [] and parse_terms(None) == []


@pytest.fixture(scope="module")
def shapes_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from clipcli.cli.app import app

    root = tmp_path_factory.mktemp("query")
    write_sample_folder(root / "photos", 192, seed=7)  # four of each colour and shape
    result = CliRunner().invoke(
        app, ["index", str(root / "photos"), "--index", str(root / "index"), "--model", TEST_MODEL]
    )
    assert result.exit_code == 0, result.output
    return root


def top(cli, shapes_index, *args) -> list[str]:
    result, hits = cli.json("search", *args, "--index", shapes_index / "index", "--top-k", "5")
    assert result.exit_code == 0, result.stderr
    return [Path(hit["path"]).name for hit in hits]


def test_taking_red_from_a_red_star_and_adding_blue_finds_the_blue_stars(cli, shapes_index):
    wanted = top(cli, shapes_index, "a blue star")
    assert sum(name.endswith(("-blue-star.png", "-blue-star.jpg", "-blue-star.webp"))
               for name in wanted) == 4  # fmt: skip
    assert set(top(cli, shapes_index, "a red star - red + blue")) == set(wanted)


def test_the_query_vector_is_the_weighted_sum_of_unit_term_vectors_normalised(shapes_index):
    spec = requested_spec(TEST_MODEL, None)
    unit = {
        text: query_vector(spec, Query([Term(text, 1.0)])) for text in ("a star", "red", "blue")
    }
    combined = query_vector(spec, Query(parse_terms("a star - red + 2*blue")))
    expected = unit["a star"] - unit["red"] + 2 * unit["blue"]
    np.testing.assert_allclose(combined, expected / np.linalg.norm(expected), atol=1e-6)
    assert np.linalg.norm(combined) == pytest.approx(1.0, abs=1e-6)


def test_a_term_seen_before_is_not_embedded_again(shapes_index, monkeypatch):
    spec = requested_spec(TEST_MODEL, None)
    query_vector(spec, Query(parse_terms("a ring + a cross")))
    embedded: list[list[str]] = []
    fast = text_tower.fast_text_encoder

    def counting(spec):
        encode = fast(spec)
        return lambda texts: embedded.append(texts) or encode(texts)

    monkeypatch.setattr(text_tower, "fast_text_encoder", counting)
    query_vector(spec, Query(parse_terms("a cross - a ring + a square")))
    assert embedded == [["a square"]]


def test_terms_that_cancel_out_are_a_usage_error(cli, shapes_index):
    result = cli("search", "a star - a star", "--index", shapes_index / "index")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: the query's terms cancel each other out")
    assert cli("search", "a star - a star", "--literal", "--index", shapes_index / "index")


def test_a_photo_given_with_not_image_is_moved_away_from(cli, shapes_index):
    star = next((shapes_index / "photos").glob("*-blue-star.*"))
    assert star.name in top(cli, shapes_index, "a blue star")
    assert star.name not in top(cli, shapes_index, "a blue star", "--not-image", star)


def test_images_may_be_repeated_and_each_counts_once(cli, shapes_index):
    """Two examples are the sum of their unit vectors, normalised: every hit's score is the sum
    of its scores for each image alone, divided by one and the same norm."""
    first, second = sorted((shapes_index / "photos").glob("*-blue-star.*"))[:2]
    index = shapes_index / "index"
    scores = []
    for images in (["--image", first], ["--image", second], ["--image", first, "--image", second]):
        _, hits = cli.json("search", *images, "--index", index, "--top-k", "192")
        scores.append({hit["path"]: hit["score"] for hit in hits})
    alone_a, alone_b, both = scores
    norms = [(alone_a[path] + alone_b[path]) / score for path, score in both.items()]
    assert max(norms) - min(norms) < 1e-3


def test_min_score_drops_the_weaker_hits_and_top_k_stays_the_cap(cli, shapes_index):
    index = shapes_index / "index"
    _, every = cli.json("search", "a green ring", "--index", index, "--top-k", "20")
    floor = every[6]["score"]
    _, kept = cli.json(
        "search", "a green ring", "--index", index, "--top-k", "20", "--min-score", str(floor)
    )
    assert kept == [hit for hit in every if hit["score"] >= floor]
    assert len(kept) >= 7
    _, capped = cli.json(
        "search", "a green ring", "--index", index, "--top-k", "3", "--min-score", str(floor)
    )
    assert capped == every[:3]


def test_a_floor_no_photo_reaches_prints_nothing_and_says_so(cli, shapes_index):
    result, hits = cli.json(
        "search", "a star", "--index", shapes_index / "index", "--min-score", "0.99"
    )
    assert result.exit_code == 0 and hits == []
    assert result.stderr == "warning: no photo scores 0.99 or more\n"
