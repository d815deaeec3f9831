"""`clipcli dupes --move-extras DIR`: every copy but each group's keeper is moved into DIR under
the path it had below its indexed folder, recorded in a manifest; nothing is overwritten, and
nothing moves from a group whose keeper is gone or for a copy that changed since indexing."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_MODEL, snapshot

from clipcli.errors import EXIT_USAGE
from clipcli.shapes import draw_shape


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """Three drawings at the top, a smaller JPEG copy of each in sub/."""
    rng = np.random.default_rng(3)
    root = tmp_path / "Pictures"
    (root / "sub").mkdir(parents=True)
    for shape in ("star", "square", "cross"):
        image = draw_shape(rng, shape, "green", size=(240, 200))[0]
        image.save(root / f"{shape}.png")
        image.resize((120, 100)).save(root / "sub" / f"{shape}-small.jpg", quality=85)
    return root


@pytest.fixture
def indexed(cli, library: Path, index: Path) -> Path:
    result = cli("index", library, "--index", index, "--model", TEST_MODEL)
    assert result.exit_code == 0, result.stderr
    return library


def manifest_rows(into: Path) -> list[dict[str, str]]:
    with open(into / "clipcli-dupes.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_copies_move_below_their_folders_name_and_the_keepers_stay(
    cli, indexed: Path, index: Path, tmp_path: Path
):
    into = tmp_path / "set-aside"
    result = cli("dupes", "--index", index, "--move-extras", into)
    assert result.exit_code == 0, result.stderr
    moved = sorted(p.relative_to(into).as_posix() for p in into.rglob("*.jpg"))
    assert moved == ["Pictures/sub/cross-small.jpg", "Pictures/sub/square-small.jpg",
                     "Pictures/sub/star-small.jpg"]  # fmt: skip
    assert sorted(p.name for p in indexed.rglob("*") if p.is_file()) == [
        "cross.png", "square.png", "star.png"
    ]  # fmt: skip
    rows = manifest_rows(into)
    assert {(row["source"], row["destination"], row["keeper"]) for row in rows} == {
        (str(indexed / "sub" / f"{s}-small.jpg"), str(into / "Pictures/sub" / f"{s}-small.jpg"),
         str(indexed / f"{s}.png"))
        for s in ("star", "square", "cross")
    }  # fmt: skip
    assert "3 moved" in result.stdout and "`clipcli index` drops them" in result.stderr


def test_a_dry_run_says_what_would_move_and_touches_nothing(
    cli, indexed: Path, index: Path, tmp_path: Path
):
    before = snapshot(indexed)
    into = tmp_path / "set-aside"
    result = cli("dupes", "--index", index, "--move-extras", into, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("would move: ") == 3 and "nothing was moved" in result.stdout
    assert snapshot(indexed) == before and not into.exists()


def test_a_different_file_already_there_is_never_overwritten(
    cli, indexed: Path, index: Path, tmp_path: Path
):
    into = tmp_path / "set-aside"
    (into / "Pictures" / "sub").mkdir(parents=True)
    (into / "Pictures" / "sub" / "star-small.jpg").write_bytes(b"another file")
    result = cli("dupes", "--index", index, "--move-extras", into)
    assert result.exit_code == 0, result.stderr
    assert (into / "Pictures" / "sub" / "star-small.jpg").read_bytes() == b"another file"
    assert (into / "Pictures" / "sub" / "star-small (1).jpg").is_file()


def test_a_copy_changed_since_indexing_stays_where_it_is(
    cli, indexed: Path, index: Path, tmp_path: Path
):
    changed = indexed / "sub" / "star-small.jpg"
    os.utime(changed, ns=(0, changed.stat().st_mtime_ns + 10**9))
    into = tmp_path / "set-aside"
    result = cli("dupes", "--index", index, "--move-extras", into)
    assert result.exit_code == 0, result.stderr
    assert changed.is_file() and not (into / "Pictures" / "sub" / "star-small.jpg").exists()
    assert f"kept {changed} in place: changed since it was indexed" in result.stderr
    assert len(manifest_rows(into)) == 2


def test_nothing_moves_from_a_group_whose_keeper_went_since_it_was_found(
    indexed: Path, index: Path, tmp_path: Path
):
    from clipcli.dupes import find_duplicates
    from clipcli.dupes_extras import move_extras

    found = find_duplicates(index)
    (indexed / "star.png").unlink()  # between finding the groups and moving their copies
    moved = move_extras(found, tmp_path / "set-aside")
    assert (indexed / "sub" / "star-small.jpg").is_file()
    assert [(left.path, left.reason) for left in moved.left] == [
        (str(indexed / "sub" / "star-small.jpg"), f"its keeper {indexed / 'star.png'} is gone")
    ]
    assert len(moved.moved) == 2


def test_with_json_the_groups_stay_on_stdout_and_the_moves_go_to_stderr(
    cli, indexed: Path, index: Path, tmp_path: Path
):
    into = tmp_path / "set-aside"
    result, groups = cli.json("dupes", "--index", index, "--move-extras", into)
    assert result.exit_code == 0, result.stderr
    assert len(groups) == 3 and "moved: " in result.stderr


def test_dry_run_belongs_to_move_extras(cli, indexed: Path, index: Path):
    result = cli("dupes", "--index", index, "--dry-run")
    assert result.exit_code == EXIT_USAGE and "add --move-extras DIR" in result.stderr
