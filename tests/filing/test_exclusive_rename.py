"""A rename that never replaces a file, whichever way the filesystem lets it be done."""

from __future__ import annotations

import errno
import os

import pytest

from clipcli.filing import exclusive_rename as module
from clipcli.filing.exclusive_rename import rename_exclusive


@pytest.fixture(params=["renameat2", "hard link", "check then rename"])
def way(request, monkeypatch):
    """Each way of renaming: Linux's no-replace rename, else a hard link, else neither."""
    if request.param != "renameat2":
        monkeypatch.setattr(module, "_renamed_no_replace", lambda source, target: None)
    if request.param == "check then rename":

        def no_links(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(module.os, "link", no_links)
    return request.param


def test_a_file_is_renamed_to_a_free_name(tmp_path, way):
    source, target = tmp_path / "a.part", tmp_path / "a.jpg"
    source.write_bytes(b"picture")

    rename_exclusive(source, target)

    assert target.read_bytes() == b"picture"
    assert not source.exists()


def test_an_existing_file_is_never_replaced(tmp_path, way):
    source, target = tmp_path / "a.part", tmp_path / "a.jpg"
    source.write_bytes(b"new")
    target.write_bytes(b"old")

    with pytest.raises(FileExistsError):
        rename_exclusive(source, target)

    assert target.read_bytes() == b"old"
    assert source.read_bytes() == b"new"


def test_a_dangling_link_counts_as_taken(tmp_path, way):
    source, target = tmp_path / "a.part", tmp_path / "a.jpg"
    source.write_bytes(b"new")
    os.symlink(tmp_path / "nowhere", target)

    with pytest.raises(FileExistsError):
        rename_exclusive(source, target)

    assert os.path.islink(target)
    assert source.read_bytes() == b"new"


def test_this_linux_renames_in_one_step_without_the_fallbacks(tmp_path, monkeypatch):
    if module._renameat2() is None:
        pytest.skip("no renameat2 here")
    source, target = tmp_path / "a.part", tmp_path / "a.jpg"
    source.write_bytes(b"picture")

    def no_links(*args, **kwargs):
        raise AssertionError("the fallback was used")

    monkeypatch.setattr(module.os, "link", no_links)
    rename_exclusive(source, target)

    assert target.read_bytes() == b"picture"
