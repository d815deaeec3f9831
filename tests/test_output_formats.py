"""What clipcli writes for names that would break output: Rich markup, newlines, tabs, and
bytes that are not UTF-8. Each must come out literally, escaped where it would break a line.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import make_image


def test_a_file_name_that_is_not_utf8_is_escaped_in_json_and_messages(cli, model_args, tmp_path):
    name = os.fsdecode(b"latin1-\xe9.png")  # "latin1-\udce9.png"
    try:
        image = make_image(tmp_path / name, "red")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    shown = f"{tmp_path}/latin1-\\xe9.png"
    args = ["classify", image, "--labels", "red,blue", "--top-k", "1", *model_args]
    result, data = cli.json(*args)
    assert result.exit_code == 0, result.stderr
    assert data[0]["path"] == shown
    assert json.loads(result.stdout_bytes.decode("utf-8")) == data
    gone = tmp_path / os.fsdecode(b"gone-\xff.png")
    missing = cli("classify", gone, "--labels", "a", *model_args)
    assert missing.stderr == f"error: {tmp_path}/gone-\\xff.png: no such file\n"


def test_an_error_naming_a_hostile_file_is_one_literal_line(cli, model_args, tmp_path):
    missing = tmp_path / "[red]gone\nnow\t.jpg"
    result = cli("classify", missing, "--labels", "[bold]a", *model_args)
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path}/[red]gone\\nnow\\t.jpg: no such file\n"


def test_a_skipped_file_with_a_newline_in_its_name_is_warned_about_on_one_line(
    cli, model_args, tmp_path
):
    folder = tmp_path / "[b]album"
    make_image(folder / "good.png")
    (folder / "bad\nname.jpg").write_bytes(b"")
    result = cli("index", folder, "--index", tmp_path / "index", *model_args)
    assert result.exit_code == 0
    assert result.stderr == f"warning: skipped {folder}/bad\\nname.jpg: empty file (0 bytes)\n"
