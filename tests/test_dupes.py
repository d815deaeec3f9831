"""Specification of `clipcli dupes`: groups of copies of one picture (resized, re-encoded, saved
again) among an index's photos, with a keeper each, found by the vectors and confirmed by the
pixels' hashes (pHash and colour grid); `--loose` groups by the vectors alone. Nothing is
deleted."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    TEST_MODEL,
    as_of_the_previous_schema,
    one_shape_on_backgrounds,
    snapshot,
    without_torch,
)
from PIL import Image

from clipcli.dupes import HASH_LIMIT
from clipcli.shapes import COLOUR_RGB, draw_shape

SHAPES_MODEL = ["--model", TEST_MODEL]  # the bundled trained weights
# Drawings of a few colours and shapes, a red star beside a red square: only the pixels tell
# two drawings of one kind apart, for the model finds them alike.
KINDS = [("star", "red"), ("square", "red"), ("triangle", "blue"), ("cross", "green")]
# Every shape of the world, circles and rings (never turned, so closer in grey levels) among them.
EVERY_SHAPE = [*KINDS, ("circle", "blue"), ("ring", "red")]
GREY, YELLOW_GREEN = (128, 128, 128), (154, 205, 50)


def drawing(rng: np.random.Generator, shape: str, colour: str) -> Image.Image:
    size = (int(rng.integers(240, 560)), int(rng.integers(240, 560)))
    return draw_shape(rng, shape, colour, size=size)[0]


def copies_folder(
    folder: Path, seed: int = 0, per_kind: int = 4, kinds: list[tuple[str, str]] = KINDS
) -> dict[str, str]:
    """`per_kind` drawings of each kind, each with 4 copies (with_copies). Returns each file's
    original."""
    rng = np.random.default_rng(seed)
    drawings = {
        f"{colour}-{shape}-{n}": drawing(rng, shape, colour)
        for shape, colour in kinds
        for n in range(per_kind)
    }
    return with_copies(folder, drawings)


def with_copies(folder: Path, pictures: dict[str, Image.Image]) -> dict[str, str]:
    """Each picture saved under its name (PNG and JPEG at quality 95 by turns), with 4 copies:
    as a JPEG, at 3/5 the size, as a WEBP, as a JPEG at quality 50. Returns each file's
    original."""
    folder.mkdir(parents=True, exist_ok=True)
    original_of: dict[str, str] = {}
    for n, (name, image) in enumerate(pictures.items()):
        original = folder / f"{name}{'.png' if n % 2 == 0 else '.jpg'}"
        image.save(original, quality=95)
        decoded = Image.open(original).convert("RGB")
        small = image.resize((image.width * 3 // 5, image.height * 3 // 5), Image.LANCZOS)
        copies = {
            folder / f"{name}-as.jpg": (decoded, {"quality": 85}),
            folder / f"{name}-small.png": (small, {}),
            folder / f"{name}.webp": (image, {"quality": 75}),
            folder / f"{name}-q50.jpg": (decoded, {"quality": 50}),
        }
        for path, (picture, options) in copies.items():
            picture.save(path, **options)
        for path in [original, *copies]:
            original_of[str(path)] = str(original)
    return original_of


def grouped_pairs(groups: list[dict]) -> set[tuple[str, str]]:
    """Every pair of photos that some group puts together."""
    pairs = set()
    for group in groups:
        members = [group["keeper"], *(m["path"] for m in group["members"])]
        pairs |= {tuple(sorted(pair)) for pair in itertools.combinations(members, 2)}
    return pairs


def without_distances(groups: list[dict]) -> list[tuple[str, list[tuple[str, float]]]]:
    return [
        (group["keeper"], [(m["path"], m["similarity"]) for m in group["members"]])
        for group in groups
    ]


def distances(groups: list[dict]) -> list[int]:
    return [member["hash_distance"] for group in groups for member in group["members"]]


@pytest.fixture
def shapes_index(cli, index: Path):
    """Index `folder` with the bundled shapes model into the test's index."""

    def run(folder: Path) -> Path:
        result = cli("index", folder, "--index", index, *SHAPES_MODEL)
        assert result.exit_code == 0, result.stderr
        return index

    return run


def test_resized_and_re_encoded_copies_are_found_and_different_drawings_never_grouped(
    cli, shapes_index, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    drawings = {
        f"{colour}-{shape}-{n}": drawing(rng, shape, colour)
        for shape, colour in EVERY_SHAPE
        for n in range(4)
    }
    for seed, (shape, colour) in enumerate(EVERY_SHAPE):  # and one outline on two backgrounds
        twins = one_shape_on_backgrounds(shape, COLOUR_RGB[colour], [GREY, YELLOW_GREEN], seed=seed)
        drawings |= {f"{colour}-{shape}-on-grey": twins[0], f"{colour}-{shape}-on-green": twins[1]}
    original_of = with_copies(tmp_path / "photos", drawings)
    index = shapes_index(tmp_path / "photos")

    result, groups = cli.json("dupes", "--index", index)

    assert result.exit_code == 0, result.stderr
    found = grouped_pairs(groups)
    copies = {
        tuple(sorted(pair))
        for pair in itertools.combinations(original_of, 2)
        if original_of[pair[0]] == original_of[pair[1]]
    }
    precision = len(found & copies) / len(found)
    recall = len(found & copies) / len(copies)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    for group in groups:  # however close two drawings of one kind are, each group is one
        members = [group["keeper"], *(m["path"] for m in group["members"])]
        assert len({original_of[path] for path in members}) == 1


@pytest.mark.parametrize("shape", ["circle", "ring"])
def test_one_shape_at_one_place_on_two_backgrounds_is_two_pictures_each_with_its_copy(
    cli, shapes_index, tmp_path: Path, shape: str
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    blue = (20, 40, 230)
    on_grey, on_green = one_shape_on_backgrounds(shape, blue, [GREY, YELLOW_GREEN])
    on_grey.save(folder / "on-grey.png")
    on_grey.save(folder / "on-grey-again.jpg", quality=80)
    on_green.save(folder / "on-green.png")
    on_green.resize((300, 225), Image.LANCZOS).save(folder / "on-green-smaller.webp", quality=80)
    index = shapes_index(folder)

    _, loose = cli.json("dupes", "--index", index, "--loose")
    result, groups = cli.json("dupes", "--index", index)

    # The vectors and the grey levels take the two drawings for one picture...
    assert len(loose) == 1 and len(loose[0]["members"]) == 3
    assert all(m["similarity"] >= 0.95 for m in loose[0]["members"])
    assert all(m["hash_distance"] <= HASH_LIMIT for m in loose[0]["members"])
    # ...their colours tell them apart, and each keeps its own copy.
    assert result.exit_code == 0, result.stderr
    keepers = {group["keeper"]: [m["path"] for m in group["members"]] for group in groups}
    assert keepers == {
        str(folder / "on-grey.png"): [str(folder / "on-grey-again.jpg")],
        str(folder / "on-green.png"): [str(folder / "on-green-smaller.webp")],
    }


def test_loose_groups_drawings_of_one_kind_that_the_hash_keeps_apart(
    cli, shapes_index, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in range(4):
        drawing(rng, "star", "red").save(folder / f"star-{n}.png")
    index = shapes_index(folder)

    _, strict = cli.json("dupes", "--index", index)
    result, loose = cli.json("dupes", "--index", index, "--loose")

    assert result.exit_code == 0, result.stderr
    assert strict == []
    assert len(loose) == 1 and len(loose[0]["members"]) == 3
    distances = [member["hash_distance"] for member in loose[0]["members"]]
    assert all(isinstance(d, int) and HASH_LIMIT < d <= 64 for d in distances)
    assert all(member["similarity"] >= 0.95 for member in loose[0]["members"])


def test_exact_copies_are_one_group_whatever_the_threshold(
    cli, shapes_index, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(2)
    drawing(rng, "star", "red").save(folder / "star.png")
    drawing(rng, "ring", "blue").save(folder / "ring.png")
    shutil.copy(folder / "star.png", folder / "star copy.png")
    (folder / "backup").mkdir()
    shutil.copy(folder / "star.png", folder / "backup" / "star.png")
    index = shapes_index(folder)

    result, groups = cli.json("dupes", "--index", index, "--threshold", "1")

    assert result.exit_code == 0, result.stderr
    assert groups == [
        {
            "keeper": str(folder / "star.png"),  # the shortest path, as all else is equal
            "members": [
                {
                    "path": str(folder / "backup" / "star.png"),
                    "similarity": 1.0,
                    "hash_distance": 0,
                },
                {"path": str(folder / "star copy.png"), "similarity": 1.0, "hash_distance": 0},
            ],
        }
    ]


def test_the_keeper_has_the_most_pixels_then_is_the_oldest_then_has_the_shortest_path(
    cli, shapes_index, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    image = drawing(rng, "star", "red")
    image.save(folder / "big.png")
    image.resize((image.width // 2, image.height // 2), Image.LANCZOS).save(folder / "s.jpg")
    os.utime(folder / "s.jpg", (1_000_000_000, 1_000_000_000))  # older, yet smaller
    other = drawing(rng, "cross", "green")
    other.save(folder / "a.png")
    other.save(folder / "a-much-longer-name.jpg", quality=90)
    os.utime(folder / "a-much-longer-name.jpg", (1_000_000_000, 1_000_000_000))
    third = drawing(rng, "triangle", "blue")
    third.save(folder / "tri-copy.png")
    third.save(folder / "t.png")
    for path in ("tri-copy.png", "t.png"):
        os.utime(folder / path, (1_500_000_000, 1_500_000_000))
    index = shapes_index(folder)

    _, groups = cli.json("dupes", "--index", index)

    keepers = {group["keeper"]: [m["path"] for m in group["members"]] for group in groups}
    assert keepers == {
        str(folder / "big.png"): [str(folder / "s.jpg")],
        str(folder / "a-much-longer-name.jpg"): [str(folder / "a.png")],
        str(folder / "t.png"): [str(folder / "tri-copy.png")],
    }


def test_json_lists_groups_largest_first_and_members_most_similar_first(
    cli, shapes_index, tmp_path: Path
) -> None:
    copies_folder(tmp_path / "photos", per_kind=1)
    shutil.copy(tmp_path / "photos" / "red-star-0.png", tmp_path / "photos" / "again.png")
    index = shapes_index(tmp_path / "photos")

    result, groups = cli.json("dupes", "--index", index)

    assert result.exit_code == 0, result.stderr
    assert [set(group) for group in groups] == [{"keeper", "members"}] * len(groups)
    sizes = [len(group["members"]) for group in groups]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 5
    for group in groups:
        assert isinstance(group["keeper"], str)
        for member in group["members"]:
            assert set(member) == {"path", "similarity", "hash_distance"}
            assert isinstance(member["path"], str) and isinstance(member["hash_distance"], int)
            assert isinstance(member["similarity"], float) and 0.95 <= member["similarity"] <= 1
        order = [(-m["similarity"], m["hash_distance"]) for m in group["members"]]
        assert order == sorted(order)
    _, twice = cli.json("dupes", "--index", index)
    assert twice == groups  # the same order every time


def test_people_get_each_keeper_its_copies_and_what_they_take(
    cli, shapes_index, tmp_path: Path
) -> None:
    copies_folder(tmp_path / "photos", per_kind=1)
    index = shapes_index(tmp_path / "photos")
    _, groups = cli.json("dupes", "--index", index)
    extra = sum(len(group["members"]) for group in groups)

    result = cli("dupes", "--index", index)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"keep   {groups[0]['keeper']}" in lines
    first = groups[0]["members"][0]
    assert (
        f"  copy {first['path']}  similarity {first['similarity']:.3f}, "
        f"hash distance {first['hash_distance']}"
    ) in lines
    assert lines[-1].startswith(f"{len(groups)} groups, {extra} extra copies taking ")
    assert lines[-1].endswith(" kB, among 20 photos")


def test_html_shows_every_group_with_thumbnails(cli, shapes_index, tmp_path: Path) -> None:
    copies_folder(tmp_path / "photos", per_kind=1)
    index = shapes_index(tmp_path / "photos")
    page = tmp_path / "dupes.html"

    result = cli("dupes", "--index", index, "--html", page)

    assert result.exit_code == 0, result.stderr
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 20
    assert html.count('<li class="card keeper">') == 4
    assert "similarity 0.9" in html and "distance " in html
    assert "red-star-0-small.png" in html


def test_nothing_is_deleted_moved_or_written_in_the_photos_or_the_index(
    cli, shapes_index, tmp_path: Path
) -> None:
    copies_folder(tmp_path / "photos", per_kind=1)
    index = shapes_index(tmp_path / "photos")
    cli("dupes", "--index", index)  # the FAISS index is saved by the index run already
    before = (snapshot(tmp_path / "photos"), snapshot(index))

    result = cli("dupes", "--index", index, "--json")

    assert result.exit_code == 0, result.stderr
    assert (snapshot(tmp_path / "photos"), snapshot(index)) == before


def test_an_index_of_an_older_clipcli_is_hashed_for_the_run_and_left_as_it_was(
    cli, shapes_index, tmp_path: Path
) -> None:
    copies_folder(tmp_path / "photos", per_kind=1)
    index = shapes_index(tmp_path / "photos")
    _, expected = cli.json("dupes", "--index", index)
    as_of_the_previous_schema(index)
    before = snapshot(index)

    result, groups = cli.json("dupes", "--index", index)

    assert result.exit_code == 0, result.stderr
    # The same groups, though hashed from a decode at another scale than the model's (64 px
    # here), which moves a flat drawing's hash by a few bits.
    assert without_distances(groups) == without_distances(expected)
    assert max(distances(groups)) <= HASH_LIMIT
    assert "20 photos had no perceptual hash stored" in result.stderr
    assert "`clipcli index` stores them" in result.stderr
    assert snapshot(index) == before  # still the older clipcli's


def test_a_photo_deleted_since_it_was_indexed_is_left_out(
    cli, shapes_index, tmp_path: Path
) -> None:
    copies_folder(tmp_path / "photos", per_kind=1)
    index = shapes_index(tmp_path / "photos")
    gone = tmp_path / "photos" / "red-star-0-small.png"
    gone.unlink()

    result, groups = cli.json("dupes", "--index", index)

    assert result.exit_code == 0, result.stderr
    photos = tmp_path / "photos"
    stars = next(group for group in groups if group["keeper"] == str(photos / "red-star-0.png"))
    assert sorted(member["path"] for member in stars["members"]) == [
        str(photos / name)
        for name in ("red-star-0-as.jpg", "red-star-0-q50.jpg", "red-star-0.webp")
    ]
    assert f"warning: left out {gone}: gone or no longer readable" in result.stderr


def test_the_help_shows_the_default_threshold_the_logic_uses() -> None:
    from clipcli.cli import dupes_command
    from clipcli.dupes import DEFAULT_THRESHOLD

    assert dupes_command.DEFAULT_THRESHOLD == DEFAULT_THRESHOLD


def test_finding_dupes_loads_no_model() -> None:
    # The vectors, hashes and stats are the catalog's: torch has no part in it.
    assert without_torch("import clipcli.dupes\nresult = 1") == 1


def test_no_index_is_a_runtime_error_and_says_where(cli, tmp_path: Path) -> None:
    result = cli("dupes", "--index", tmp_path / "nowhere")

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'nowhere'}: no index here")


@pytest.mark.parametrize("threshold", ["0", "-0.5", "1.01", "2"])
def test_a_threshold_outside_0_to_1_is_a_usage_error(cli, tmp_path: Path, threshold: str) -> None:
    result = cli("dupes", "--index", tmp_path, "--threshold", threshold)

    assert result.exit_code == 2
    assert f"--threshold must be above 0 and at most 1, not {float(threshold)}" in result.stderr


def test_an_html_file_that_is_not_html_is_refused_before_any_work(cli, tmp_path: Path) -> None:
    result = cli("dupes", "--index", tmp_path / "nowhere", "--html", tmp_path / "page.txt")

    assert result.exit_code == 2
    assert "the file name must end in .html or .htm" in result.stderr
