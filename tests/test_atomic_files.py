"""Output files are written whole or not at all."""

from __future__ import annotations

import pytest

from clipcli.atomic_files import write_file
from clipcli.errors import ClipcliError


def test_a_file_is_written_and_replaced_whole_with_nothing_left_beside_it(tmp_path):
    out = tmp_path / "sheet.png"
    out.write_bytes(b"the previous picture")

    write_file(out, b"the new picture")

    assert out.read_bytes() == b"the new picture"
    assert [path.name for path in tmp_path.iterdir()] == ["sheet.png"]


def test_a_folder_that_does_not_exist_is_an_error_for_the_user(tmp_path):
    out = tmp_path / "no-such-folder" / "sheet.png"

    with pytest.raises(ClipcliError) as raised:
        write_file(out, b"picture", what="the contact sheet")

    assert raised.value.message == (
        f"{out}: cannot write the contact sheet (No such file or directory)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_write_that_fails_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()  # a folder where the file should go: the rename fails
    (out / "inside").write_text("kept")

    with pytest.raises(ClipcliError, match="cannot write"):
        write_file(out, b"picture")

    assert (out / "inside").read_text() == "kept"
    assert [path.name for path in tmp_path.iterdir()] == ["taken"]
