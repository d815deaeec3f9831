"""What clipcli writes for names that would break output: Rich markup, newlines, tabs, and
bytes that are not UTF-8. Each must come out literally, escaped where it would break a line,
and no summary or message may be wrapped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image

REPOSITORY = Path(__file__).resolve().parents[1]


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


def test_the_index_summary_is_one_line_whatever_its_length_and_says_1_image(
    cli, model_args, tmp_path
):
    index = tmp_path / ("a-long-index-folder-name-" * 6) / "[red]index"
    make_image(tmp_path / "photos" / "one.png")
    result = cli("index", tmp_path / "photos", "--index", index, *model_args)
    assert result.exit_code == 0, result.stderr
    _, report = cli.json("index", tmp_path / "photos", "--index", index, *model_args)
    assert re.fullmatch(
        re.escape(f"1 image in {index} ({report['model']}): 1 added, 0 updated, 0 moved, ")
        + r"0 removed, 0 unchanged, 0 skipped in \d+\.\ds\n",
        result.stdout,
    )
    assert len(result.stdout) > 200


# -- a real terminal ---------------------------------------------------------------------------


def on_a_terminal(args: list[str], columns: int) -> tuple[int, str, str]:
    """clipcli as a real process with stdout on a pseudo-terminal `columns` wide."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES", "FORCE_COLOR"}}
    process = subprocess.Popen(
        [sys.executable, "-m", "clipcli", *args],
        env={**env, "PYTHONPATH": path, "TERM": "xterm-256color"},
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # Linux: the other end closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    stderr = process.stderr.read().decode()
    process.wait(timeout=300)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode()).replace("\r\n", "\n")
    return process.returncode, text, stderr


def test_a_narrow_terminal_gets_the_index_summary_on_one_line(model_args, tmp_path):
    make_image(tmp_path / "photos" / "one.png")
    index_args = ["index", str(tmp_path / "photos"), "--index", str(tmp_path / "i"), *model_args]
    code, shown, stderr = on_a_terminal(index_args, 40)
    assert code == 0, stderr
    assert re.fullmatch(
        r"1 image in \S+ \(.+\): 1 added, 0 updated, 0 moved, 0 removed, 0 unchanged, "
        r"0 skipped in \d+\.\ds\n",
        shown,
    )
