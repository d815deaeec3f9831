"""Copies and moves into folders: the source kept (or moved whole), nothing overwritten, an
identical file found under its name or a numbered one, and no half file under a real name."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from clipcli.filing import transfer
from clipcli.filing.transfer import Filer, remove_stale_parts

PAST = 1_500_000_000  # a modification time long ago, so that "kept" cannot be "now" by chance


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (PAST, PAST))
    return path


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_a_copy_holds_the_same_bytes_and_time_and_the_source_is_untouched(tmp_path):
    source = write(tmp_path / "photos" / "a.jpg", b"picture")

    landing = Filer("test").copy(source, tmp_path / "sorted" / "cat")

    assert landing.path == tmp_path / "sorted" / "cat" / "a.jpg"
    assert landing.written and not landing.source_removed
    assert landing.path.read_bytes() == b"picture"
    assert os.stat(landing.path).st_mtime == PAST
    assert source.read_bytes() == b"picture" and os.stat(source).st_mtime == PAST
    assert names(landing.path.parent) == ["a.jpg"]  # no temporary file left beside it


def test_an_identical_file_under_the_name_is_skipped(tmp_path):
    source = write(tmp_path / "a.jpg", b"picture")
    there = write(tmp_path / "cat" / "a.jpg", b"picture")

    landing = Filer("test").copy(source, tmp_path / "cat")

    assert landing.path == there and not landing.written
    assert names(tmp_path / "cat") == ["a.jpg"]


def test_a_different_file_under_the_name_makes_the_copy_take_the_first_free_number(tmp_path):
    write(tmp_path / "cat" / "a.jpg", b"another picture")
    write(tmp_path / "cat" / "a (1).jpg", b"a third picture")
    source = write(tmp_path / "a.jpg", b"picture")

    landing = Filer("test").copy(source, tmp_path / "cat")

    assert landing.path.name == "a (2).jpg" and landing.written
    assert (tmp_path / "cat" / "a.jpg").read_bytes() == b"another picture"
    assert (tmp_path / "cat" / "a (1).jpg").read_bytes() == b"a third picture"


def test_an_identical_file_under_any_numbered_name_is_found_even_past_a_gap(tmp_path):
    write(tmp_path / "cat" / "a.jpg", b"another picture")
    write(tmp_path / "cat" / "a (3).jpg", b"picture")  # (1) and (2) were deleted since
    source = write(tmp_path / "a.jpg", b"picture")

    landing = Filer("test").copy(source, tmp_path / "cat")

    assert landing.path.name == "a (3).jpg" and not landing.written
    assert names(tmp_path / "cat") == ["a (3).jpg", "a.jpg"]


def test_a_name_differing_only_in_case_counts_as_taken(tmp_path):
    write(tmp_path / "cat" / "A.JPG", b"another picture")
    source = write(tmp_path / "a.jpg", b"picture")

    landing = Filer("test").copy(source, tmp_path / "cat")

    assert landing.path.name == "a (1).jpg"


def test_a_numbered_source_name_is_numbered_again_not_taken_for_a_variant(tmp_path):
    write(tmp_path / "cat" / "a (1).jpg", b"another picture")
    source = write(tmp_path / "a (1).jpg", b"picture")

    landing = Filer("test").copy(source, tmp_path / "cat")

    assert landing.path.name == "a (1) (1).jpg"


def test_files_of_one_run_are_compared_with_each_other_too(tmp_path):
    first = write(tmp_path / "x" / "a.jpg", b"picture")
    twin = write(tmp_path / "y" / "a.jpg", b"picture")
    other = write(tmp_path / "z" / "a.jpg", b"another picture")
    filer = Filer("test")

    landings = [filer.copy(source, tmp_path / "cat") for source in (first, twin, other)]

    assert [(landing.path.name, landing.written) for landing in landings] == [
        ("a.jpg", True),
        ("a.jpg", False),
        ("a (1).jpg", True),
    ]


def test_a_dry_run_writes_nothing_and_plans_the_names_the_real_run_takes(tmp_path):
    sources = [
        write(tmp_path / "x" / "a.jpg", b"picture"),
        write(tmp_path / "y" / "a.jpg", b"picture"),
        write(tmp_path / "z" / "a.jpg", b"another picture"),
    ]
    planned = Filer("test", dry_run=True)
    real = Filer("test")

    plan = [planned.copy(source, tmp_path / "sorted" / "cat") for source in sources]
    assert not (tmp_path / "sorted").exists()
    done = [real.copy(source, tmp_path / "sorted" / "cat") for source in sources]

    assert plan == done


def test_a_file_that_takes_the_name_after_the_folder_was_listed_is_not_overwritten(tmp_path):
    source = write(tmp_path / "a.jpg", b"picture")
    folder = tmp_path / "cat"
    folder.mkdir()
    filer = Filer("test")
    filer.contents.spot(source, folder, "a.jpg")  # the folder is listed: empty
    write(folder / "a.jpg", b"written by another program meanwhile")

    landing = filer.copy(source, folder)

    assert landing.path.name == "a (1).jpg"
    assert (folder / "a.jpg").read_bytes() == b"written by another program meanwhile"
    assert names(folder) == ["a (1).jpg", "a.jpg"]


def test_a_copy_that_fails_half_way_leaves_nothing_in_the_folder(tmp_path, monkeypatch):
    source = write(tmp_path / "a.jpg", b"picture")
    folder = tmp_path / "cat"

    def disk_full(reader, writer, length=0):
        writer.write(b"pic")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    with pytest.raises(OSError, match="No space left"):
        Filer("test").copy(source, folder)

    assert names(folder) == []
    assert source.read_bytes() == b"picture"


def test_a_move_on_one_filesystem_is_a_rename_of_the_file_itself(tmp_path):
    source = write(tmp_path / "photos" / "a.jpg", b"picture")
    inode = os.stat(source).st_ino

    landing = Filer("test").move(source, tmp_path / "sorted")

    assert landing.written and landing.source_removed
    assert not source.exists()
    assert os.stat(landing.path).st_ino == inode
    assert landing.path.read_bytes() == b"picture"


def test_a_move_across_filesystems_copies_then_removes_the_source(tmp_path, monkeypatch):
    source = write(tmp_path / "photos" / "a.jpg", b"picture")
    monkeypatch.setattr(transfer, "_one_filesystem", lambda source, folder: False)

    landing = Filer("test").move(source, tmp_path / "sorted")

    assert landing.written and landing.source_removed and not source.exists()
    assert landing.path.read_bytes() == b"picture"
    assert os.stat(landing.path).st_mtime == PAST
    assert names(landing.path.parent) == ["a.jpg"]


def test_a_move_to_another_real_filesystem(tmp_path):
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem here")
    source = write(tmp_path / "a.jpg", b"picture")
    with tempfile.TemporaryDirectory(dir=other) as folder:
        landing = Filer("test").move(source, Path(folder) / "cat")

        assert landing.path.read_bytes() == b"picture"
        assert not source.exists()


def test_a_move_whose_identical_file_is_there_already_removes_the_source(tmp_path):
    source = write(tmp_path / "photos" / "a.jpg", b"picture")
    there = write(tmp_path / "sorted" / "a.jpg", b"picture")

    landing = Filer("test").move(source, tmp_path / "sorted")

    assert landing.path == there and not landing.written and landing.source_removed
    assert not source.exists() and there.read_bytes() == b"picture"


def test_a_move_never_removes_a_source_that_is_its_own_destination_through_a_link(tmp_path):
    source = write(tmp_path / "photos" / "a.jpg", b"picture")
    os.symlink(tmp_path / "photos", tmp_path / "sorted")

    landing = Filer("test").move(source, tmp_path / "sorted")

    assert not landing.written and not landing.source_removed
    assert source.read_bytes() == b"picture"


def test_a_dry_run_move_moves_nothing(tmp_path):
    source = write(tmp_path / "photos" / "a.jpg", b"picture")

    landing = Filer("test", dry_run=True).move(source, tmp_path / "sorted")

    assert landing.written and landing.source_removed  # what it would do
    assert source.read_bytes() == b"picture"
    assert not (tmp_path / "sorted").exists()


def test_stale_temporary_files_of_the_tag_are_removed_and_nothing_else(tmp_path):
    ours = write(tmp_path / "cat" / ".clipcli-test-0123456789abcdef.part", b"half")
    kept = [
        write(tmp_path / "cat" / ".clipcli-other-0123456789abcdef.part", b"another tag's"),
        write(tmp_path / "cat" / ".clipcli-test-notours.part", b"not a name made here"),
        write(tmp_path / "cat" / "photo.part", b"a user's file"),
    ]

    removed = remove_stale_parts(tmp_path, "test")

    assert removed == [ours] and not ours.exists()
    assert all(path.exists() for path in kept)
