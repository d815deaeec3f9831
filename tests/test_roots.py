"""The folders an index is built from: described by `clipcli info` and `clipcli roots`, followed
when they move, kept while they are unmounted, forgotten or pruned on request, and excluding
what they were told to."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import make_image

from clipcli.store.catalog import Catalog

INFO_KEYS = {
    "index",
    "model",
    "pretrained",
    "photos",
    "roots",
    "layout",
    "catalog_bytes",
    "faiss_bytes",
    "updated",
    "skipped",
}


def photos_in(folder: Path, count: int, colour: str = "red") -> Path:
    for number in range(count):
        make_image(folder / f"{colour}-{number}.png", (40 * number % 256, 90, 200), (40, 30))
    return folder


@pytest.fixture
def library(tmp_path: Path) -> dict[str, Path]:
    return {
        "holidays": photos_in(tmp_path / "holidays", 3),
        "family": photos_in(tmp_path / "family", 2, "blue"),
        "index": tmp_path / "index",
    }


def indexed(cli, model_args, library, *folders: Path, extra: tuple = ()) -> dict:
    result, report = cli.json("index", *folders, "--index", library["index"], *model_args, *extra)
    assert result.exit_code == 0, result.stderr
    return report


def roots_of(cli, library) -> dict[str, tuple[int, bool]]:
    result, found = cli.json("roots", "--index", library["index"])
    assert result.exit_code == 0, result.stderr
    return {root["path"]: (root["photos"], root["reachable"]) for root in found}


def vectors(library) -> dict[str, bytes]:
    with Catalog(library["index"], read_only=True) as catalog:
        ids, embeddings = catalog.vectors()
    return {int(i): row.tobytes() for i, row in zip(ids, embeddings, strict=True)}


def test_info_describes_the_index(cli, model_args, library):
    (library["family"] / "broken.jpg").write_bytes(b"not a picture")
    indexed(cli, model_args, library, library["holidays"], library["family"])
    result, info = cli.json("info", "--index", library["index"])
    assert result.exit_code == 0, result.stderr
    assert set(info) == INFO_KEYS
    assert info["index"] == str(library["index"]) and info["photos"] == 5 and info["skipped"] == 1
    assert info["model"] == "clipcli-shapes" and info["pretrained"].endswith(".pt")
    assert info["roots"] == [
        {"path": str(library["family"]), "photos": 2, "reachable": True},
        {"path": str(library["holidays"]), "photos": 3, "reachable": True},
    ]
    assert info["layout"] == "Flat"
    assert info["catalog_bytes"] > 0 and info["faiss_bytes"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["updated"])
    text = cli("info", "--index", library["index"]).stdout
    assert "photos:   5" in text and str(library["holidays"]) in text


def test_info_of_a_folder_with_no_index_says_so(cli, tmp_path):
    result = cli("info", "--index", tmp_path / "nothing")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'nothing'}: no index here")


def test_a_moved_root_is_followed_by_content_without_embedding_again(cli, model_args, library):
    indexed(cli, model_args, library, library["holidays"])
    before = vectors(library)
    moved = library["holidays"].rename(library["holidays"].with_name("holidays-on-usb"))
    report = indexed(cli, model_args, library, moved)
    assert (report["added"], report["moved"], report["removed"]) == (0, 3, 0)
    assert vectors(library) == before
    assert roots_of(cli, library) == {str(moved): (3, True)}


def test_photos_of_an_unmounted_root_are_kept_while_another_is_indexed(cli, model_args, library):
    indexed(cli, model_args, library, library["holidays"], library["family"])
    unmounted = library["family"].rename(library["family"].with_name("elsewhere"))
    report = indexed(cli, model_args, library, library["holidays"])
    assert report["removed"] == 0 and report["total"] == 5
    assert roots_of(cli, library)[str(library["family"])] == (2, False)
    unmounted.rename(library["family"])  # mounted again: nothing to do
    assert indexed(cli, model_args, library, library["family"])["unchanged"] == 2


def test_roots_move_re_points_a_root_by_hand(cli, model_args, library):
    indexed(cli, model_args, library, library["holidays"])
    before = vectors(library)
    new = library["holidays"].rename(library["holidays"].with_name("mnt-holidays"))
    result, moved = cli.json(
        "roots", "--index", library["index"], "--move", library["holidays"], new
    )
    assert result.exit_code == 0, result.stderr
    assert moved == {"old": str(library["holidays"]), "new": str(new), "photos": 3}
    assert vectors(library) == before
    _, hits = cli.json("search", "a photo", "--index", library["index"])
    assert {Path(hit["path"]).parent for hit in hits} == {new}
    assert indexed(cli, model_args, library, new)["unchanged"] == 3


@pytest.mark.parametrize("problem", ["not a root", "no such folder", "already a root"])
def test_roots_move_refuses_what_cannot_be_meant(cli, model_args, library, problem):
    indexed(cli, model_args, library, library["holidays"], library["family"])
    old, new = {
        "not a root": (library["index"].parent / "other", library["family"]),
        "no such folder": (library["holidays"], library["index"].parent / "missing"),
        "already a root": (library["holidays"], library["family"]),
    }[problem]
    result = cli("roots", "--index", library["index"], "--move", old, new)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert roots_of(cli, library)[str(library["holidays"])] == (3, True)


def test_forget_drops_a_root_and_its_photos_even_when_it_is_gone(cli, model_args, library):
    indexed(cli, model_args, library, library["holidays"], library["family"])
    shutil.rmtree(library["family"])
    report = indexed(cli, model_args, library, extra=("--forget", library["family"]))
    assert (report["removed"], report["total"]) == (2, 3)
    assert set(roots_of(cli, library)) == {str(library["holidays"])}


def test_prune_drops_deleted_photos_and_keeps_those_of_unmounted_roots(cli, model_args, library):
    indexed(cli, model_args, library, library["holidays"], library["family"])
    (library["holidays"] / "red-0.png").unlink()
    unmounted = library["family"].rename(library["family"].with_name("away"))
    result, report = cli.json("index", "--prune", "--index", library["index"])
    assert result.exit_code == 0, result.stderr
    assert (report["removed"], report["total"]) == (1, 4)
    assert f"{library['family']}" in result.stderr and "not reachable" in result.stderr
    assert unmounted.is_dir()


def test_excludes_are_remembered_for_their_root_until_others_are_given(cli, model_args, library):
    make_image(library["holidays"] / "drafts" / "draft.png")
    make_image(library["holidays"] / "keep.webp")
    first = indexed(cli, model_args, library, library["holidays"], extra=("--exclude", "drafts/"))
    assert first["total"] == 4
    again = indexed(cli, model_args, library, library["holidays"])
    assert (again["added"], again["total"]) == (0, 4)  # drafts/ still left out
    other = indexed(cli, model_args, library, library["holidays"], extra=("--exclude", "*.webp"))
    assert (other["added"], other["removed"], other["total"]) == (1, 1, 4)


def test_index_with_nothing_to_do_is_a_usage_error(cli, library):
    result = cli("index", "--index", library["index"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no folders to index")
